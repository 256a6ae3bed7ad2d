// The sequence builder, made nicer by script (it works without): the subject and the A/B
// variants show only on email steps, variable buttons insert at the cursor (into a variant's subject or message too) (a refused form's 422 swaps in: app.js).
(function () {
  "use strict";
  function showSubjects(root) {
    (root || document).querySelectorAll("[data-step]").forEach(function (step) {
      var channel = step.querySelector("[data-channel]");
      var subject = step.querySelector("[data-subject]");
      if (channel && subject) subject.hidden = channel.value !== "email";
      // A/B variants are for email steps; a step that has some keeps them in sight (the save
      // says what to do about them)
      var variants = step.querySelector("[data-variants]");
      if (channel && variants) {
        variants.hidden = channel.value !== "email" && !variants.querySelector("[data-variant]");
      }
    });
  }
  document.addEventListener("DOMContentLoaded", function () { showSubjects(); });
  document.addEventListener("htmx:load", function (event) { showSubjects(event.detail.elt); });
  document.addEventListener("change", function (event) {
    if (event.target.matches("[data-channel]")) showSubjects(event.target.closest("form"));
  });
  // the field a variable goes into: the step's subject or message, whichever was used last
  document.addEventListener("focusin", function (event) {
    var step = event.target.closest("[data-step]");
    if (step && event.target.matches("textarea, [data-subject] input, [data-variant] input[name$='.subject']")) {
      step.lastField = event.target;
    }
  });
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-insert]");
    if (!button) return;
    var step = button.closest("[data-step]");
    var field = (step.lastField && step.lastField.isConnected && !step.lastField.closest("[hidden]"))
      ? step.lastField : step.querySelector("[data-body]");
    var fallback = step.querySelector("[data-fallback]");
    var text = "{{" + button.getAttribute("data-insert")
      + (fallback && fallback.value.trim() ? "|" + fallback.value.trim() : "") + "}}";
    var start = field.selectionStart != null ? field.selectionStart : field.value.length;
    var end = field.selectionEnd != null ? field.selectionEnd : start;
    field.setRangeText(text, start, end, "end");
    field.dispatchEvent(new Event("input", { bubbles: true }));
    field.focus();
  });
})();
