// Live updates: the server announces changes (watches of Apps, AuditRecords and Canaries) as
// server-sent events; the page fetches its own content again when its topic changed. No polling.
(function () {
  "use strict";
  var main = document.getElementById("live");
  var status = document.getElementById("connection");
  var topic = main ? main.dataset.topic : "";
  var pending = null;
  var source = null;
  function refresh() {
    pending = null;
    fetch(window.location.href, { headers: { "X-Dashboard-Fragment": "1" } })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        // Keep what someone is typing into a form while the content is replaced.
        var active = document.activeElement;
        var typing = active && main.contains(active) && active.form;
        if (!typing) { main.innerHTML = html; }
        main.dataset.updated = String(Date.now());
      })
      .catch(function () {});
  }
  function connect() {
    source = new EventSource("/events");
    source.addEventListener("change", function (e) {
      if (e.data === topic && pending === null) { pending = setTimeout(refresh, 100); }
    });
    source.onopen = function () { status.textContent = "live"; };
    source.onerror = function () { status.textContent = "reconnecting…"; };
  }
  // A page left behind (or kept in the back-forward cache) lets its connection go: browsers
  // allow only a few per host, and the next page needs one.
  window.addEventListener("pagehide", function () { if (source) { source.close(); source = null; } });
  window.addEventListener("pageshow", function (e) { if (e.persisted || !source) { connect(); refresh(); } });
  connect();
})();
