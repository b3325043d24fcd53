"use strict";
// The gallery's first page, live: an image uploaded elsewhere (another tab,
// the API) appears at the top when an event of it arrives, as the server's own card (which live.js then keeps current).
(function () {
  const gallery = document.querySelector(".cards[data-live-gallery]");
  if (!gallery) return;
  const fetching = new Set();

  document.addEventListener("live:image", async function (event) {
    const image = event.detail;
    const id = "image-" + image.id;
    if (document.getElementById(id) || fetching.has(id)) return;
    fetching.add(id);
    try {
      const response = await fetch(image.card_url, { headers: { Accept: "text/html" } });
      if (!response.ok) return;
      const html = await response.text();
      const card = new DOMParser().parseFromString(html, "text/html").getElementById(id);
      if (card && !document.getElementById(id)) {
        gallery.prepend(document.importNode(card, true));
        const empty = document.querySelector(".cards-empty");
        if (empty) empty.hidden = true;
      }
    } finally {
      fetching.delete(id);
    }
  });
})();
