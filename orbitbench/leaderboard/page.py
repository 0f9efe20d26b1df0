"""The static page's shell: inline CSS and the sorting script (no external resource).

Sorting: click a column header (again to reverse). The query string `?sort=<column key>&dir=asc|desc`
sorts every table on load, so a headless browser can check the sorting without clicking.
"""

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="generator" content="orbitbench leaderboard build">
<title>orbitbench leaderboard</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }
table.board { border-collapse: collapse; font-size: 13px; margin: 0.5em 0; }
table.board th, table.board td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; white-space: nowrap; }
table.board th { background: #f3f3f3; cursor: pointer; user-select: none; }
table.board th.sorted-asc::after { content: " \\25B2"; }
table.board th.sorted-desc::after { content: " \\25BC"; }
table.board td[data-key=entry], table.board td[data-key=model], table.board td[data-key=method],
table.board td[data-key=invariance] { text-align: left; }
.badge { border-radius: 3px; padding: 1px 5px; font-size: 12px; }
.badge.ok { background: #d4f4d4; color: #135d13; }
.badge.rep { background: #eee; color: #555; }
.plots svg { margin: 0.5em 1em 0.5em 0; vertical-align: top; }
p.intro { max-width: 70em; }
</style></head>
<body>
<h1>orbitbench leaderboard</h1>
<p class="intro">{{INTRO}}</p>
{{BODY}}
<script id="board-data" type="application/json">{{DATA}}</script>
<script>
"use strict";
function sortTable(table, key, dir) {
  const heads = Array.from(table.tHead.rows[0].cells);
  const head = heads.find(h => h.dataset.key === key);
  if (!head) return false;
  const numeric = head.dataset.type === "num";
  const body = table.tBodies[0];
  const value = row => row.querySelector('td[data-key="' + key + '"]').dataset.value;
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    let x = value(a), y = value(b);
    if (numeric) { x = x === "" ? -Infinity : parseFloat(x.replace(/,/g, "")); y = y === "" ? -Infinity : parseFloat(y.replace(/,/g, "")); }
    const order = x < y ? -1 : x > y ? 1 : 0;
    return dir === "desc" ? -order : order;
  });
  rows.forEach(row => body.appendChild(row));
  heads.forEach(h => h.classList.remove("sorted-asc", "sorted-desc"));
  head.classList.add("sorted-" + dir);
  table.dataset.sortKey = key;
  table.dataset.sortDir = dir;
  return true;
}
document.querySelectorAll("table.board").forEach(table => {
  Array.from(table.tHead.rows[0].cells).forEach(head => head.addEventListener("click", () => {
    const dir = table.dataset.sortKey === head.dataset.key && table.dataset.sortDir === "asc" ? "desc" : "asc";
    sortTable(table, head.dataset.key, dir);
  }));
});
const query = new URLSearchParams(window.location.search);
if (query.get("sort")) {
  document.querySelectorAll("table.board").forEach(t => sortTable(t, query.get("sort"), query.get("dir") === "desc" ? "desc" : "asc"));
}
if (query.get("click")) {  // ?click=<key>[,<key>...]: click those headers in order (a test drives the handlers)
  query.get("click").split(",").forEach(key => document.querySelectorAll('table.board th[data-key="' + key + '"]').forEach(h => h.click()));
}
document.body.dataset.ready = "1";
</script>
</body></html>
"""
