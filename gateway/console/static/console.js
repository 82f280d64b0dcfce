// TuneLoop console: small enhancements; every page works without this file.
(function () {
  "use strict";
  document.documentElement.classList.add("js");

  // Times: the server writes UTC; show the reader's local time, keeping UTC in the tooltip.
  function localTimes() {
    document.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (!isNaN(when.getTime())) {
        el.title = el.textContent;
        el.textContent = when.toLocaleString();
      }
    });
  }

  // A select marked data-autosubmit submits its form when changed (an admin's project switch).
  function autosubmit() {
    document.querySelectorAll("select[data-autosubmit]").forEach(function (el) {
      el.addEventListener("change", function () { el.form.submit(); });
    });
  }

  // Ctrl+Enter (Cmd+Enter) in a marked textarea saves its form.
  function ctrlEnter() {
    document.querySelectorAll("textarea[data-submit-on-ctrl-enter]").forEach(function (el) {
      el.addEventListener("keydown", function (event) {
        if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          el.form.requestSubmit();
        }
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    autosubmit();
    ctrlEnter();
  });
}());
