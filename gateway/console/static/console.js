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

  // Keys: an element marked data-key="a" (several: "n j") is clicked when that key is pressed, a text box
  // focused; not while typing in a box (Esc leaves it). The review queue's approve, reject, edit and next.
  function shortcuts() {
    document.addEventListener("keydown", function (event) {
      if (event.ctrlKey || event.metaKey || event.altKey || !/^[a-z]$/.test(event.key)) {
        if (event.key === "Escape" && event.target && event.target.blur) { event.target.blur(); }
        return;
      }
      var target = event.target;
      if (target && (target.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName))) { return; }
      var el = document.querySelector('[data-key~="' + event.key + '"]');
      if (!el) { return; }
      event.preventDefault();
      if (/^(INPUT|TEXTAREA)$/.test(el.tagName)) { el.focus(); } else { el.click(); }
    });
  }

  // A box marked data-refresh="URL" (a running job's loss curve) is replaced every data-refresh-s seconds by
  // what URL answers (this gateway only), until the answer says the job ended (header X-Job-Status).
  function refresh() {
    document.querySelectorAll("[data-refresh]").forEach(function (box) {
      var url = box.getAttribute("data-refresh");
      var every = 1000 * (parseFloat(box.getAttribute("data-refresh-s")) || 3);
      var ended = /^(succeeded|failed|cancelled)$/;
      function tick() {
        fetch(url, {credentials: "same-origin", cache: "no-store"}).then(function (response) {
          if (!response.ok) { return; }
          var status = response.headers.get("X-Job-Status") || "";
          return response.text().then(function (html) {
            box.innerHTML = html;
            localTimes();
            if (ended.test(status)) { window.location.reload(); } else { setTimeout(tick, every); }
          });
        }).catch(function () { setTimeout(tick, every * 2); });
      }
      setTimeout(tick, every);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    localTimes();
    autosubmit();
    ctrlEnter();
    shortcuts();
    refresh();
  });
}());
