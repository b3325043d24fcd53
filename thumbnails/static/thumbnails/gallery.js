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
      const card = await window.thumbnailsLive.fetchElement(image.card_url, id);
      if (card && !document.getElementById(id)) {
        gallery.prepend(card);
        const empty = document.querySelector(".cards-empty");
        if (empty) empty.hidden = true;
      }
    } finally {
      fetching.delete(id);
    }
  });
})();
