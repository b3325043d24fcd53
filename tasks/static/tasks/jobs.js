"use strict";
// The jobs page, live: live.js turns /ws/jobs/ into "live:task" events (the
// snapshot's tasks first, then each change, stale ones already dropped);
// this script writes each into its row, or fetches the row of a job the
// page has not listed yet and puts it on top.
(function () {
  const table = document.querySelector("table.jobs");
  if (!table) return;
  const body = table.tBodies[0];
  const fetching = new Set();
  const live = window.thumbnailsLive; // live.js, loaded before this script

  document.addEventListener("live:task", function (event) { follow(event.detail); });
  // What live.js applied before this script ran (the snapshot may be in).
  live.latest.forEach(follow);

  function follow(task) {
    const row = document.getElementById("job-" + task.id);
    if (row) {
      show(row, task);
    } else {
      insert(task.id);
    }
  }

  function show(row, task) {
    row.dataset.status = task.status;
    const label = row.querySelector('[data-role="status"]');
    label.textContent = task.status;
    label.className = "status status-" + task.status.toLowerCase();
    row.querySelector('[data-role="progress"]').value = task.progress;
    row.querySelector('[data-role="message"]').textContent = task.message || "";
    row.querySelector('[data-role="attempts"]').textContent =
      task.attempts + " of " + task.max_attempts;
    row.querySelector('[data-role="error"]').textContent = task.error || "";
    const finished = task.status === "SUCCESSFUL" || task.status === "FAILED";
    row.querySelector('[data-role="cancel"]').hidden = finished;
    row.querySelector('[data-role="retry"]').hidden = task.status !== "FAILED";
  }

  async function insert(id) {
    if (fetching.has(id)) return;
    fetching.add(id);
    try {
      const url = table.dataset.rowUrl.replace("ID", encodeURIComponent(id));
      const row = await live.fetchElement(url, "job-" + id);
      if (row && !document.getElementById(row.id)) {
        body.prepend(row);
        const latest = live.latest.get(id);
        if (latest) show(document.getElementById(row.id), latest);
        const empty = document.querySelector(".jobs-empty");
        if (empty) empty.hidden = true;
      }
    } finally {
      fetching.delete(id);
    }
  }
})();
