"""The leaderboard as web pages: `index.html` (the tables across tasks) and one page per task, rendered from the very
Markdown the report writes (so the pages cannot say something the tables do not), with the task's figures inline.

The pages open from disk and make no network request: the style and the script that sorts and filters the tables are
inline. Every table sorts by any column (click its header; numbers sort as numbers, "47.3 ± 3.5" by 47.3) and the
box at the top hides the rows that do not contain its text. `#sort=TABLE:COLUMN:asc|desc` in the address sorts a
table when the page opens (tables and columns counted from 0), which is how the browser test checks the script.
"""

from __future__ import annotations

import html
from pathlib import Path

import markdown

from benchmark import io

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1400px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 0.6em 0 1.2em; font-size: 12.5px; display: block; overflow-x: auto; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f2f5; cursor: pointer; user-select: none; white-space: nowrap; }
th[data-dir="asc"]::after { content: " \\25B2"; } th[data-dir="desc"]::after { content: " \\25BC"; }
tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f3f3; padding: 0 3px; border-radius: 3px; }
nav a { margin-right: 1em; } #filter { width: 22em; padding: 3px 6px; margin: 0.5em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 12px; color: #555; }
"""

SCRIPT = """
function cellValue(td) {
  const t = td.textContent.trim();
  const m = t.match(/^[+-]?\\d+(\\.\\d+)?(e[+-]?\\d+)?/i);
  return m ? [0, parseFloat(m[0])] : [1, t.toLowerCase()];
}
function sortTable(table, col, dir) {
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {  // numbers before text (a dash: no value) in either direction
    const x = cellValue(a.cells[col]), y = cellValue(b.cells[col]);
    if (x[0] !== y[0]) return x[0] - y[0];
    const c = x[1] < y[1] ? -1 : x[1] > y[1] ? 1 : 0;
    return dir === 'asc' ? c : -c;
  });
  rows.forEach(r => body.appendChild(r));
  Array.from(table.tHead.rows[0].cells).forEach((th, i) => {
    if (i === col) th.dataset.dir = dir; else delete th.dataset.dir;
  });
}
document.addEventListener('DOMContentLoaded', () => {
  const tables = Array.from(document.querySelectorAll('table'));
  tables.forEach(table => {
    if (!table.tHead || !table.tBodies.length) return;
    Array.from(table.tHead.rows[0].cells).forEach((th, col) => {
      th.title = 'sort by this column';
      th.addEventListener('click', () => sortTable(table, col, th.dataset.dir === 'asc' ? 'desc' : 'asc'));
    });
  });
  const box = document.getElementById('filter');
  box.addEventListener('input', () => {
    const q = box.value.toLowerCase();
    tables.forEach(t => Array.from(t.tBodies[0] ? t.tBodies[0].rows : []).forEach(r => {
      r.style.display = r.textContent.toLowerCase().includes(q) ? '' : 'none';
    }));
  });
  const m = location.hash.match(/^#sort=(\\d+):(\\d+):(asc|desc)$/);
  if (m && tables[+m[1]]) sortTable(tables[+m[1]], +m[2], m[3]);
  document.body.dataset.ready = String(tables.length);
});
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  document.body.dataset.images = imgs.length + ':' + imgs.filter(i => i.complete && i.naturalWidth > 0).length;
});
"""


def _page(title: str, nav: list[tuple[str, str]], body_md: str, figures: list[tuple[str, str]]) -> str:
    body = markdown.markdown(body_md, extensions=["tables"], output_format="html")
    links = " ".join(f'<a href="{html.escape(href)}">{html.escape(text)}</a>' for text, href in nav)
    shown = "".join(f'<figure><img src="{html.escape(src)}" alt="{html.escape(cap)}" loading="lazy">'
                    f"<figcaption>{html.escape(cap)}</figcaption></figure>\n" for src, cap in figures)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n'
            f"<style>{STYLE}</style>\n<script>{SCRIPT}</script>\n</head>\n<body>\n<nav>{links}</nav>\n"
            '<input id="filter" type="search" placeholder="show only rows containing ..." aria-label="filter rows">\n'
            f"{body}\n" + (f"<h2>Figures</h2>\n{shown}" if shown else "") + "</body>\n</html>\n")


def write_pages(results_dir: Path, tasks: list[str], figures: list[Path]) -> list[Path]:
    """`index.html` and `<task>/index.html` from the `tables.md` files the report wrote into `results_dir`, with the
    figures among `figures` (paths under `results_dir`) that belong to each page."""
    results_dir = Path(results_dir)
    nav = [("all tasks", "index.html")] + [(t, f"{t}/index.html") for t in tasks]
    written = []
    top = [(p.relative_to(results_dir).as_posix(), p.relative_to(results_dir).as_posix())
           for p in figures if p.suffix == ".png" and p.parent == results_dir / "figures"]
    written.append(io.write_text(results_dir / "index.html", _page(
        "cellflow-bench leaderboard", nav, (results_dir / "tables.md").read_text(), top)))
    for task in tasks:
        folder = results_dir / task
        mine = sorted(p for p in figures if p.suffix == ".png" and (
            p.parent == folder or results_dir / "figures" / task in p.parents))
        shown = [(Path("..", p.relative_to(results_dir)).as_posix() if p.parent != folder else p.name,
                  p.relative_to(results_dir).as_posix()) for p in mine]
        task_nav = [(text, "../" + href) for text, href in nav]
        written.append(io.write_text(folder / "index.html", _page(
            f"cellflow-bench: {task}", task_nav, (folder / "tables.md").read_text(), shown)))
    return written
