// Live updates: the server announces changes (watches of Apps, AuditRecords and Canaries) as
// server-sent events; the page fetches its own content again when its topic changed. No polling.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("connection");
  var topic = main ? main.dataset.topic : "";
  var pending = null;
  function refresh() {
    pending = null;
    fetch(window.location.href, { headers: { "X-Dashboard-Fragment": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        // Keep focus and form input where they are while the content is replaced.
        var active = document.activeElement;
        var keep = active && main.contains(active) && active.form;
        if (!keep) { main.innerHTML = html; }
        main.dataset.updated = String(Date.now());
      })
      .catch(function () {});
  }
  var source = new EventSource("/events");
  source.addEventListener("change", function (e) {
    if (e.data === topic && pending === null) { pending = setTimeout(refresh, 100); }
  });
  source.onopen = function () { status.textContent = "live"; };
  source.onerror = function () { status.textContent = "reconnecting…"; };
})();
