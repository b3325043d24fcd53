"use strict";
// Live job progress. Follows the user's task events on /ws/jobs/ and updates
// every element carrying data-task-id; when a job ends, swaps in the server's
// fresh copy of the element (same id) fetched from its data-refresh-url.
window.thumbnailsLive = (function () {
  const FINAL = { SUCCESSFUL: "ready", FAILED: "failed" };
  const latest = new Map(); // task id -> the last event seen
  const inFlight = new Set(); // ids of elements being refreshed
  let retryDelay = 1000;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/jobs/");
    socket.addEventListener("open", function () {
      retryDelay = 1000;
      // Catch up on whatever ended while the socket was not open.
      document.querySelectorAll("[data-task-id]").forEach(function (element) {
        if (!isFinal(element.dataset.status)) refresh(element);
      });
    });
    socket.addEventListener("message", function (message) {
      receive(JSON.parse(message.data));
    });
    socket.addEventListener("close", function () {
      setTimeout(connect, retryDelay);
      retryDelay = Math.min(retryDelay * 2, 30000);
    });
  }

  function receive(event) {
    if (event.type !== "task.update") return;
    latest.set(event.id, event);
    const selector = '[data-task-id="' + CSS.escape(event.id) + '"]';
    document.querySelectorAll(selector).forEach(function (element) {
      apply(element, event);
    });
  }

  function apply(element, event) {
    const final = FINAL[event.status];
    if (final) {
      if (element.dataset.status !== final) refresh(element);
    } else if (element.dataset.status !== "ready") {
      const status = event.status === "RUNNING" ? "processing" : "pending";
      show(element, status, event.message || event.error, event.progress);
    }
  }

  function show(element, status, message, progress) {
    element.dataset.status = status;
    const label = element.querySelector('[data-role="status"]');
    label.textContent = status;
    label.className = "status status-" + status;
    const bar = element.querySelector('[data-role="progress"]');
    if (bar && typeof progress === "number") bar.value = progress;
    const note = element.querySelector('[data-role="message"]');
    if (note) note.textContent = message || "";
  }

  async function refresh(element, attempt) {
    const id = element.id;
    if (!id || !element.dataset.refreshUrl || inFlight.has(id)) return;
    inFlight.add(id);
    try {
      const response = await fetch(element.dataset.refreshUrl, {
        headers: { Accept: "text/html" },
      });
      if (response.ok) {
        const html = await response.text();
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById(id);
        const current = document.getElementById(id);
        if (fresh && current) current.replaceWith(document.importNode(fresh, true));
      }
    } finally {
      inFlight.delete(id);
    }
    followUp(document.getElementById(id), attempt || 0);
  }

  // Apply what arrived during the fetch; if the job has ended but the copy
  // does not say so yet, ask again a little later (a few times).
  function followUp(element, attempt) {
    const event = element && latest.get(element.dataset.taskId);
    if (!event) return;
    const final = FINAL[event.status];
    if (!final) {
      apply(element, event);
    } else if (element.dataset.status !== final && attempt < 5) {
      setTimeout(function () { refresh(element, attempt + 1); }, 500 * (attempt + 1));
    }
  }

  function isFinal(status) {
    return status === "ready" || status === "failed";
  }

  connect();
  return { refresh: refresh, show: show };
})();
