// The holiday country select, made searchable by script (without it, it is a plain select the
// keyboard can jump through): the search box above it shows only the countries whose name or
// code has what was typed, and picks the first when exactly one is left.
(function () {
  "use strict";
  function fold(text) { return text.normalize("NFKC").toLocaleLowerCase(); }
  function showFilters(root) {
    (root || document).querySelectorAll("[data-filter-options]").forEach(function (input) {
      input.hidden = false;
      var label = document.querySelector('label[for="' + input.id + '"]');
      if (label) label.hidden = false;
    });
  }
  document.addEventListener("DOMContentLoaded", function () { showFilters(); });
  document.addEventListener("htmx:load", function (event) { showFilters(event.detail.elt); });
  document.addEventListener("input", function (event) {
    var input = event.target;
    if (!input.matches("[data-filter-options]")) return;
    var select = document.getElementById(input.getAttribute("data-filter-options"));
    if (!select) return;
    var wanted = fold(input.value.trim());
    var shown = [];
    Array.prototype.forEach.call(select.options, function (option) {
      var match = !wanted || !option.value || fold(option.textContent).indexOf(wanted) >= 0;
      option.hidden = !match;
      if (match && option.value) shown.push(option);
    });
    if (shown.length === 1 && select.value !== shown[0].value) {
      select.value = shown[0].value;
      select.dispatchEvent(new Event("change", { bubbles: true }));
    }
  });
})();
