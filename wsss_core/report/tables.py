"""Tables of the HTML report: one small self-contained HTML page per table.

Snakemake's report shows images, HTML and PDF inline but a CSV only as a download link, so
every table the report shows goes there as HTML as well (the CSV and Markdown files stay as
they are). A page is a styled ``<table>`` with its title; clicking a column heading sorts
the rows by it (a few lines of inline JavaScript, nothing loaded from elsewhere).

Cells are formatted as in the Markdown tables (``wsss_core.io.to_markdown``): numbers of a
float column with two decimals (``floatfmt``), integer columns as integers, text as it is;
a missing value (NaN) is a dash. Columns keep the frame's order; text is HTML-escaped.
"""

from __future__ import annotations

import html
import math
import numbers
import os

import pandas as pd
from pandas.api import types as ptypes

from wsss_core.io import atomic_path

MISSING = "\u2013"  # en dash: a cell without value

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 14px;
       color: #1f2328; margin: 12px; }
h1 { font-size: 17px; margin: 0 0 4px 0; }
p.note { color: #59636e; font-size: 12px; margin: 0 0 8px 0; }
table { border-collapse: collapse; }
th, td { padding: 4px 9px; border-bottom: 1px solid #d1d9e0; }
th { background: #f6f8fa; border-bottom: 2px solid #afb8c1; cursor: pointer; user-select: none;
     vertical-align: bottom; text-align: left; max-width: 14em; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
th[aria-sort="ascending"]::after { content: " \\25B2"; }
th[aria-sort="descending"]::after { content: " \\25BC"; }
td.missing { color: #8c959f; }
tbody tr:nth-child(even) { background: #fafbfc; }
tbody tr:hover { background: #eef4ff; }
"""

# sort the body rows by the clicked heading: numbers by their exact value (data-v), missing
# values last; text in locale order; a second click reverses
SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var up = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    var num = th.classList.contains("num");
    var key = function (tr) { var td = tr.cells[col];
      return num ? parseFloat(td.getAttribute("data-v")) : td.textContent; };
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (num) { if (isNaN(x)) return isNaN(y) ? 0 : 1; if (isNaN(y)) return -1;
                 return up ? x - y : y - x; }
      return up ? x.localeCompare(y) : y.localeCompare(x);
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  });
});
"""


def _is_missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def format_value(value: object, floatfmt: str = ".2f") -> str:
    """One cell's text as the Markdown tables show it: a float with ``floatfmt``, an integer
    as it is, missing as a dash, anything else as ``str``."""
    if _is_missing(value):
        return MISSING
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return format(float(value), floatfmt)
    return str(value)


def _numeric(column: pd.Series) -> bool:
    return ptypes.is_numeric_dtype(column) and not ptypes.is_bool_dtype(column)


def _cell(value: object, numeric: bool, floatfmt: str) -> str:
    text = html.escape(format_value(value, floatfmt))
    classes = []
    if numeric:
        classes.append("num")
    if _is_missing(value):
        classes.append("missing")
    attrs = f' class="{" ".join(classes)}"' if classes else ""
    if numeric:
        exact = "NaN" if _is_missing(value) else repr(float(value))
        attrs += f' data-v="{exact}"'
    return f"<td{attrs}>{text}</td>"


def table_html(df: pd.DataFrame, title: str, note: str | None = None, floatfmt: str = ".2f") -> str:
    """A self-contained HTML page of ``df`` (columns in order, no index) titled ``title``,
    with an optional ``note`` under the title; columns sort on a click."""
    numeric = [_numeric(df[c]) for c in df.columns]
    num_class = ' class="num"'
    head = "".join(
        f'<th scope="col"{num_class if num else ""}>{html.escape(str(name))}</th>'
        for name, num in zip(df.columns, numeric, strict=True)
    )
    body = []
    for row in df.itertuples(index=False, name=None):
        cells = "".join(
            _cell(value, num, floatfmt) for value, num in zip(row, numeric, strict=True)
        )
        body.append(f"<tr>{cells}</tr>")
    note_html = f'<p class="note">{html.escape(note)}</p>\n' if note else ""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n{note_html}"
        f'<table class="sortable">\n<thead><tr>{head}</tr></thead>\n'
        "<tbody>\n" + "\n".join(body) + "\n</tbody>\n</table>\n"
        f"<script>{SCRIPT}</script>\n</body>\n</html>\n"
    )


SORT_NOTE = "Click a column heading to sort by it (again to reverse)."


def write_table_html(
    df: pd.DataFrame,
    path: str | os.PathLike,
    title: str,
    note: str | None = SORT_NOTE,
    floatfmt: str = ".2f",
) -> None:
    """Write ``table_html(df, title, note)`` to ``path`` (UTF-8), atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(table_html(df, title, note, floatfmt), encoding="utf-8")


def csv_to_html(
    csv_path: str | os.PathLike,
    html_path: str | os.PathLike,
    title: str,
    note: str | None = SORT_NOTE,
) -> pd.DataFrame:
    """Render the CSV table ``csv_path`` as ``html_path``; returns the table."""
    try:
        df = pd.read_csv(csv_path, keep_default_na=True)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ValueError(
            f"cannot read table {csv_path} ({err}); re-run the rule that writes it"
        ) from err
    write_table_html(df, html_path, title, note)
    return df
