"use strict";
// The upload form, enhanced: files chosen or dropped are posted one per
// request (JSON answers), each with a card that live.js then keeps current.
(function () {
  const form = document.querySelector("form[data-upload]");
  if (!form) return;
  const input = form.querySelector('input[type="file"]');
  const zone = form.querySelector(".drop-zone");
  const queue = document.getElementById("upload-queue");
  const token = form.querySelector('input[name="csrfmiddlewaretoken"]').value;
  let chain = Promise.resolve();

  form.classList.add("enhanced");
  input.addEventListener("change", function () {
    enqueue(input.files);
    input.value = "";
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    enqueue(input.files);
    input.value = "";
  });
  zone.addEventListener("dragover", function (event) {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", function () {
    zone.classList.remove("over");
  });
  zone.addEventListener("drop", function (event) {
    event.preventDefault();
    zone.classList.remove("over");
    enqueue(event.dataTransfer.files);
  });

  function enqueue(files) {
    Array.from(files).forEach(function (file) {
      const card = newCard(file);
      queue.prepend(card);
      chain = chain.then(function () { return send(file, card); });
    });
  }

  // XMLHttpRequest, not fetch: only it reports the bytes sent as they go.
  function send(file, card) {
    return new Promise(function (resolve) {
      const body = new FormData();
      body.append("images", file);
      const request = new XMLHttpRequest();
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRFToken", token);
      request.upload.addEventListener("progress", function (event) {
        if (event.lengthComputable) {
          const sent = megabytes(event.loaded) + " of " + megabytes(event.total) + " MB sent";
          window.thumbnailsLive.show(card, "uploading", sent, event.loaded / event.total);
        }
      });
      request.addEventListener("load", function () {
        let answer = {};
        try {
          answer = JSON.parse(request.responseText);
        } catch (error) {
          answer = {};
        }
        if (request.status === 202) {
          accepted(card, answer);
        } else {
          refused(card, answer.error || "The upload failed (HTTP " + request.status + ").");
        }
        resolve();
      });
      request.addEventListener("error", function () {
        refused(card, "The upload failed: the connection was lost.");
        resolve();
      });
      request.send(body);
    });
  }

  function megabytes(bytes) {
    return (bytes / 1e6).toFixed(bytes < 1e7 ? 1 : 0);
  }

  function accepted(card, answer) {
    card.id = "image-" + answer.id;
    card.dataset.taskId = answer.task_id;
    card.dataset.refreshUrl = answer.card_url;
    window.thumbnailsLive.show(card, answer.status, "", 0);
    window.thumbnailsLive.refresh(card);
  }

  function refused(card, message) {
    window.thumbnailsLive.show(card, "refused", "");
    card.querySelector('[data-role="progress"]').remove();
    card.querySelector(".card-body").append(element("p", "error", message));
  }

  function newCard(file) {
    const card = element("article", "card");
    const body = element("div", "card-body");
    const line = element("p", "status-line");
    const bar = element("progress");
    bar.max = 1;
    bar.dataset.role = "progress";
    bar.setAttribute("aria-label", "Upload progress");
    line.append(
      element("span", "status", "", "status"), " ", bar, " ",
      element("span", "message", "", "message"),
    );
    body.append(element("span", "card-name", file.name), line);
    card.append(element("span", "card-thumb"), body);
    window.thumbnailsLive.show(card, "uploading", "");
    return card;
  }

  function element(tag, className, text, role) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text) node.textContent = text;
    if (role) node.dataset.role = role;
    return node;
  }
})();
