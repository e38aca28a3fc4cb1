/* evalkit's HTML report: sortable tables (click a header) and the filters of the claims table.
   No network, no libraries: the page works from a file:// URL. */
(function () {
  "use strict";

  /* a cell's sort key: its data-v (a number, or a verdict's rank) or its text; "" or "—" sorts last */
  function key(cell) {
    if (!cell) { return ""; }
    var v = cell.getAttribute("data-v");
    v = (v === null ? cell.textContent : v).trim();
    return v === "\u2014" ? "" : v;  /* an em dash: no number */
  }

  function compare(a, b) {
    var x = Number(a), y = Number(b);
    if (a !== "" && b !== "" && isFinite(x) && isFinite(y)) { return x - y; }
    return a.localeCompare(b, undefined, { numeric: true, sensitivity: "base" });
  }

  function sortBy(th) {
    var table = th.closest("table");
    var body = table.tBodies[0];
    var column = Array.prototype.indexOf.call(th.parentNode.children, th);
    var direction = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    Array.prototype.forEach.call(table.querySelectorAll("thead th[aria-sort]"), function (h) {
      h.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", direction === 1 ? "ascending" : "descending");
    var rows = Array.prototype.map.call(body.rows, function (row, i) {
      return { row: row, i: i, k: key(row.cells[column]) };
    });
    rows.sort(function (p, q) {
      if ((p.k === "") !== (q.k === "")) { return p.k === "" ? 1 : -1; }  /* blanks last, either way */
      return direction * compare(p.k, q.k) || p.i - q.i;
    });
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r.row); });
    body.appendChild(frag);
  }

  function filter(panel) {
    var table = document.getElementById(panel.getAttribute("data-for"));
    var selects = panel.querySelectorAll("select[data-filter]");
    var rows = table.tBodies[0].rows;
    var shown = 0;
    Array.prototype.forEach.call(rows, function (row) {
      var keep = Array.prototype.every.call(selects, function (s) {
        return s.value === "" || row.getAttribute("data-" + s.getAttribute("data-filter")) === s.value;
      });
      row.hidden = !keep;
      if (keep) { shown += 1; }
    });
    var out = panel.querySelector("output");
    if (out) { out.textContent = shown + " of " + rows.length + " rows shown"; }
  }

  function ready() {
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable thead th"), function (th) {
      var button = th.querySelector("button.sort");
      if (button) { button.addEventListener("click", function () { sortBy(th); }); }
    });
    Array.prototype.forEach.call(document.querySelectorAll(".filters[data-for]"), function (panel) {
      Array.prototype.forEach.call(panel.querySelectorAll("select[data-filter]"), function (s) {
        s.addEventListener("change", function () { filter(panel); });
      });
      var reset = panel.querySelector("button.reset");
      if (reset) {
        reset.addEventListener("click", function () {
          Array.prototype.forEach.call(panel.querySelectorAll("select[data-filter]"), function (s) { s.value = ""; });
          filter(panel);
        });
      }
      filter(panel);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", ready);
  } else {
    ready();
  }
}());
