// The alert queue, live: each alert the store gains (matching the page's filters) arrives
// from /api/stream as a server-sent event and is put at the top of the table, built with
// textContent only (never HTML from the data). EventSource reconnects by itself, resuming
// after the last seq it saw (Last-Event-ID).
(function () {
  "use strict";
  var table = document.getElementById("alerts");
  var live = document.getElementById("live");
  if (!table || !window.EventSource) {
    if (live) { live.textContent = "Live updates need a browser with EventSource; reload to see new alerts."; }
    return;
  }
  var body = table.tBodies[0];
  var added = 0;

  function cell(row, text, cls) {
    var td = document.createElement("td");
    if (cls) { td.className = cls; }
    td.textContent = text;
    row.appendChild(td);
    return td;
  }

  function badge(td, kind, value) {
    td.textContent = "";
    var span = document.createElement("span");
    span.className = kind + " " + kind + "-" + value;
    span.textContent = value;
    td.appendChild(span);
  }

  function addRow(a) {
    if (body.querySelector('tr[data-alert-id="' + CSS.escape(a.alert_id) + '"]')) { return; }
    var row = document.createElement("tr");
    row.dataset.seq = a.seq;
    row.dataset.alertId = a.alert_id;
    row.className = "fresh";
    cell(row, a.detected);
    cell(row, a.type);
    badge(cell(row, ""), "sev", a.severity);
    cell(row, Number(a.score).toFixed(3), "num");
    cell(row, a.subject, "mono");
    badge(cell(row, ""), "status", a.status);
    var link = document.createElement("a");
    link.className = "mono";
    link.href = a.href;
    link.textContent = a.alert_id.slice(0, 12);
    cell(row, "").appendChild(link);
    body.insertBefore(row, body.firstChild);
    var empty = document.getElementById("empty");
    if (empty) { empty.remove(); }
    added += 1;
    var count = document.getElementById("count");
    if (count) { count.textContent = String(body.rows.length); }
    live.dataset.state = "live";
    live.textContent = "Live: " + added + " new alert" + (added === 1 ? "" : "s") +
      " since this page opened; newest: " + a.type + " (" + a.severity + ") on " + a.subject + ".";
  }

  var source = new EventSource(table.dataset.stream);
  source.addEventListener("open", function () {
    live.dataset.state = "live";
    if (!added) { live.textContent = "Live: new alerts appear at the top."; }
  });
  source.addEventListener("alert", function (event) { addRow(JSON.parse(event.data)); });
  source.addEventListener("error", function () {
    live.dataset.state = "reconnecting";
    live.textContent = "The live feed was interrupted; reconnecting…";
  });
})();
