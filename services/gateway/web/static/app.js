// Small improvements over pages that work without JavaScript.
(function () {
  "use strict";
  document.documentElement.classList.add("js");
  // a form refused with its field errors answers 422 with the form again: swap it in like a
  // success (htmx leaves 4xx answers out by default); other errors stay out of the page
  if (window.htmx) {
    htmx.config.responseHandling = [
      { code: "204", swap: false },
      { code: "[23]..", swap: true },
      { code: "422", swap: true },
      { code: "[45]..", swap: false, error: true },
    ];
  }
  // every htmx request carries the session's CSRF token (forms carry it as a field too)
  document.addEventListener("htmx:configRequest", function (event) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) event.detail.headers["X-CSRF-Token"] = meta.content;
  });
  // a select that applies itself (the language switch): its submit button hides with JS on
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-submit-on-change]")) event.target.form.requestSubmit();
  });
  // after a swap, keep the keyboard where the reader is: on the element that asked for
  // focus, else on the swapped region's heading, else on the region itself
  document.addEventListener("htmx:afterSwap", function (event) {
    var region = event.detail.target;
    if (!region || !region.isConnected) return;
    if (document.activeElement && document.activeElement !== document.body
        && document.activeElement.isConnected) return;
    var wanted = region.querySelector("[autofocus], [data-focus-after-swap]");
    if (wanted) { wanted.focus(); return; }
    var heading = region.querySelector("h1, h2, h3");
    if (heading) { heading.setAttribute("tabindex", "-1"); heading.focus(); }
  });
  // a confirmation for forms that destroy something, when the script can ask in place
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  }, true);
})();
