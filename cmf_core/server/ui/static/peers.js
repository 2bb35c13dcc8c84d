// The peers page keeps itself current: every few seconds while it is visible, the page is fetched again and
// its two tables (peers, recent runs) are replaced, so a sync started with "Sync now" shows up when it ends.
(function () {
  "use strict";
  var EVERY_MS = 4000, ids = ["peers-table", "runs-table"];
  function refresh() {
    if (document.visibilityState !== "visible") { return; }
    fetch(location.pathname, { headers: { Accept: "text/html" }, credentials: "same-origin" })
      .then(function (answer) { return answer.ok ? answer.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var old = document.getElementById(id), now = fresh.getElementById(id);
          if (old && now) { old.replaceWith(document.adoptNode(now)); }
        });
        document.body.setAttribute("data-refreshed", String(Number(document.body.getAttribute("data-refreshed") || 0) + 1));
      })
      .catch(function () { /* the server is away for a moment: try again next time */ });
  }
  setInterval(refresh, EVERY_MS);
})();
