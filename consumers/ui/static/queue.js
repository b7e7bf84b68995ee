// The alert queue, live, from /api/stream's server-sent events (built with textContent only,
// never HTML from the data):
//  - "alert": an alert the store gained (matching the page's filters) goes at the top;
//  - "status": an alert's status changed (this page, another, `chainwatch alerts ack`, any
//    process on the store): its row's badge changes in place, or, when the page filters on
//    status and the new one is not among them, the row goes; the live region says so.
// EventSource reconnects by itself, resuming after the last event it saw (Last-Event-ID,
// SEQ:CHANGE, which covers both kinds). Events may come twice; both handlers are idempotent.
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
  var statuses = (table.dataset.statuses || "").split(",").filter(function (v) { return v; });

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
    row.dataset.status = a.status;
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
    counted();
    say("Live: " + added + " new alert" + (added === 1 ? "" : "s") +
      " since this page opened; newest: " + a.type + " (" + a.severity + ") on " + a.subject + ".");
  }

  function counted() {
    var count = document.getElementById("count");
    if (count) { count.textContent = String(body.rows.length); }
    if (!body.rows.length && !document.getElementById("empty")) {
      var p = document.createElement("p");
      p.id = "empty";
      p.textContent = "No alerts shown now match these filters.";
      table.parentNode.insertBefore(p, table.nextSibling);
    }
  }

  function say(text) {
    live.dataset.state = "live";
    live.textContent = text;
  }

  function flash(row) {
    row.classList.remove("fresh");
    void row.offsetWidth;  // restart the highlight
    row.classList.add("fresh");
  }

  function changeStatus(c) {
    var row = body.querySelector('tr[data-alert-id="' + CSS.escape(c.alert_id) + '"]');
    if (!row) { return; }  // not on this page
    var name = "Alert " + c.alert_id.slice(0, 12) + " (" + row.cells[1].textContent + ")";
    if (statuses.length && statuses.indexOf(c.status) < 0) {
      row.remove();
      counted();
      say(name + " is now " + c.status + "; removed from this list, which shows " +
        statuses.join(", ") + " only.");
      return;
    }
    var shown = row.querySelector("span.status");
    if (!shown || shown.textContent === c.status) { return; }  // as shown already
    shown.className = "status status-" + c.status;
    shown.textContent = c.status;
    row.dataset.status = c.status;
    flash(row);
    var note = c.note && c.note.length > 80 ? c.note.slice(0, 79) + "…" : c.note;
    say(name + " is now " + c.status + (note ? ", note: " + note : "") + ".");
  }

  var source = new EventSource(table.dataset.stream);
  source.addEventListener("open", function () {
    live.dataset.state = "live";
    if (!added) { live.textContent = "Live: new alerts appear at the top."; }
  });
  source.addEventListener("alert", function (event) { addRow(JSON.parse(event.data)); });
  source.addEventListener("status", function (event) { changeStatus(JSON.parse(event.data)); });
  source.addEventListener("error", function () {
    live.dataset.state = "reconnecting";
    live.textContent = "The live feed was interrupted; reconnecting…";
  });
})();
