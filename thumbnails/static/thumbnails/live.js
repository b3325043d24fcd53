"use strict";
// Live job state over /ws/jobs/ (the protocol is in the README).
//
// On every connect the server first sends a snapshot of the user's recent
// tasks, then events. Each task event carries the task's sequence number, so
// an event older than what the page already has (it raced the snapshot, or
// came twice) is dropped. The socket reconnects with exponential backoff and
// full jitter; while it is down the page says "reconnecting"; a 4401 close
// (signed out) goes to the login page.
//
// Every element with data-task-id follows its task; when a job ends, the
// element is swapped for the server's fresh copy (same id) from its
// data-refresh-url. Other scripts listen for "live:task", "live:image" and
// "live:snapshot" events on the document.
window.thumbnailsLive = (function () {
  const FINAL = { SUCCESSFUL: "ready", FAILED: "failed" };
  const BACKOFF_BASE_MS = 500;
  const BACKOFF_CAP_MS = 15000;
  const latest = new Map(); // task id -> the newest event applied
  const inFlight = new Set(); // ids of elements being refreshed
  let failures = 0;

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const socket = new WebSocket(scheme + location.host + "/ws/jobs/");
    socket.addEventListener("open", function () {
      failures = 0;
      setConnected(true);
    });
    socket.addEventListener("message", function (message) {
      receive(JSON.parse(message.data));
    });
    socket.addEventListener("close", function (event) {
      if (event.code === 4401) {
        location.assign("/accounts/login/?next=" + encodeURIComponent(location.pathname));
        return;
      }
      setConnected(false);
      // Full jitter: anywhere up to the exponential bound, so that many pages
      // do not all come back at the same moment after a restart.
      const bound = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** failures);
      failures += 1;
      setTimeout(connect, Math.random() * bound);
    });
  }

  function receive(message) {
    if (message.type === "snapshot") {
      message.tasks.forEach(function (task) { update(task, true); });
      // Whatever is on the page and not in the snapshot may have ended long
      // ago: ask the server for its copy.
      document.querySelectorAll("[data-task-id]").forEach(function (element) {
        if (!isFinal(element.dataset.status) && !latest.has(element.dataset.taskId)) {
          refresh(element);
        }
      });
      emit("live:snapshot", message);
    } else if (message.type === "task.update") {
      update(message, false);
    } else if (message.type && message.type.startsWith("image.")) {
      emit("live:image", message);
      const element = document.getElementById("image-" + message.id);
      if (element && message.type !== "image.added") refresh(element);
    }
  }

  function update(event, fromSnapshot) {
    const known = latest.get(event.id);
    if (known && known.seq >= event.seq) return; // stale or a duplicate
    latest.set(event.id, event);
    emit("live:task", event);
    const selector = '[data-task-id="' + CSS.escape(event.id) + '"]';
    document.querySelectorAll(selector).forEach(function (element) {
      apply(element, event, fromSnapshot);
    });
  }

  function apply(element, event, fromSnapshot) {
    const final = FINAL[event.status];
    if (final) {
      if (element.dataset.status !== final || fromSnapshot) refresh(element);
    } else if (element.dataset.status !== "ready") {
      const status = event.status === "RUNNING" ? "processing" : "pending";
      show(element, status, event.message || event.error, event.progress);
    }
  }

  function show(element, status, message, progress) {
    element.dataset.status = status;
    const label = element.querySelector('[data-role="status"]');
    if (label) {
      label.textContent = status;
      label.className = "status status-" + status;
    }
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
      const fresh = await fetchElement(element.dataset.refreshUrl, id);
      const current = document.getElementById(id);
      if (fresh && current) current.replaceWith(fresh);
    } finally {
      inFlight.delete(id);
    }
    followUp(document.getElementById(id), attempt || 0);
  }

  // The element ``id`` of the server's HTML at ``url``, ready to insert
  // (null when the answer is not OK or lacks it).
  async function fetchElement(url, id) {
    const response = await fetch(url, { headers: { Accept: "text/html" } });
    if (!response.ok) return null;
    const html = await response.text();
    const found = new DOMParser().parseFromString(html, "text/html").getElementById(id);
    return found && document.importNode(found, true);
  }

  // Apply what arrived during the fetch; if the job has ended but the copy
  // does not say so yet, ask again a little later (a few times).
  function followUp(element, attempt) {
    const event = element && latest.get(element.dataset.taskId);
    if (!event) return;
    const final = FINAL[event.status];
    if (!final) {
      apply(element, event, false);
    } else if (element.dataset.status !== final && attempt < 5) {
      setTimeout(function () { refresh(element, attempt + 1); }, 500 * (attempt + 1));
    }
  }

  function setConnected(connected) {
    document.documentElement.classList.toggle("live-reconnecting", !connected);
    const banner = document.getElementById("live-status");
    if (banner) banner.hidden = connected;
  }

  function emit(name, detail) {
    document.dispatchEvent(new CustomEvent(name, { detail: detail }));
  }

  function isFinal(status) {
    return status === "ready" || status === "failed";
  }

  connect();
  return { refresh: refresh, show: show, latest: latest, fetchElement: fetchElement };
})();
