"""HTML tables of the report, checked by value: cells, number format, escaping, column order."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
from workflow_utils import load_script

from wsss_core.io import to_markdown
from wsss_core.report.tables import MISSING, csv_to_html, format_value, table_html


class _Table(HTMLParser):
    """The headings, the body rows (cell text) and each cell's attributes of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.headings: list[str] = []
        self.heading_attrs: list[dict] = []
        self.rows: list[list[str]] = []
        self.cell_attrs: list[list[dict]] = []
        self.title = ""
        self.h1 = ""
        self.scripts: list[dict] = []
        self._cell: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr":
            self._row_started = True
        if tag == "th":
            self._cell, self._in = "", "th"
            self.heading_attrs.append(attrs)
        elif tag == "td":
            if not self.cell_attrs or len(self.cell_attrs[-1]) == len(self.headings):
                self.rows.append([])
                self.cell_attrs.append([])
            self._cell, self._in = "", "td"
            self.cell_attrs[-1].append(attrs)
        elif tag in ("title", "h1"):
            self._in = tag
        elif tag == "script":
            self.scripts.append(attrs)

    def handle_endtag(self, tag):
        if tag == "th":
            self.headings.append(self._cell)
        elif tag == "td":
            self.rows[-1].append(self._cell)
        self._in = None if tag in ("th", "td", "title", "h1") else self._in

    def handle_data(self, data):
        if self._in in ("th", "td"):
            self._cell += data
        elif self._in == "title":
            self.title += data
        elif self._in == "h1":
            self.h1 += data


def parse(page: str) -> _Table:
    table = _Table()
    table.feed(page)
    return table


@pytest.fixture
def frame():
    return pd.DataFrame(
        {
            "stage": ["relevance map", "seeds <b>&"],
            "mIoU": [30.2512, 36.835],
            "jobs": [12, 1],
            "threshold": [0.25, np.nan],
        }
    )


def test_cells_keep_the_column_order_and_format_as_markdown(frame):
    page = parse(table_html(frame, "Summary"))
    assert page.headings == ["stage", "mIoU", "jobs", "threshold"]
    assert page.rows == [
        ["relevance map", "30.25", "12", "0.25"],
        ["seeds <b>&", "36.84", "1", MISSING],
    ]
    # the same numbers as the Markdown table (floats with two decimals, integers as they are)
    markdown = to_markdown(frame)
    for text in ("30.25", "36.84", "0.25", "|     12 |"):
        assert text in markdown


def test_text_is_escaped_and_the_title_shown(frame):
    frame = frame.rename(columns={"stage": "stage <i>"})
    raw = table_html(frame, "A & B <table>", note="n < 1")
    assert "seeds &lt;b&gt;&amp;" in raw and "<b>" not in raw.split("<body>")[1]
    assert "stage &lt;i&gt;" in raw
    page = parse(raw)
    assert page.title == page.h1 == "A & B <table>"
    assert '<p class="note">n &lt; 1</p>' in raw
    # self-contained: inline style and script, nothing loaded from elsewhere
    assert page.scripts == [{}]
    assert "src=" not in raw and "href=" not in raw and "<style>" in raw


def test_numeric_columns_carry_exact_sort_values(frame):
    page = parse(table_html(frame, "t"))
    assert [a.get("class") for a in page.heading_attrs] == [None, "num", "num", "num"]
    first, second = page.cell_attrs
    assert "data-v" not in first[0]
    assert float(first[1]["data-v"]) == 30.2512
    assert first[2]["data-v"] == "12.0"
    assert second[3] == {"class": "num missing", "data-v": "NaN"}


def test_format_value():
    assert format_value(1.0) == "1.00"
    assert format_value(np.float32(0.125)) == "0.12"  # as Python's format (round half even)
    assert format_value(np.int64(7)) == "7"
    assert format_value(float("nan")) == MISSING
    assert format_value(None) == MISSING
    assert format_value("disc") == "disc"
    assert format_value(True) == "True"
    assert format_value(2.5, ".1f") == "2.5"


def test_csv_to_html_and_cli(frame, tmp_path, capsys):
    frame.to_csv(tmp_path / "t.csv", index=False)
    back = csv_to_html(tmp_path / "t.csv", tmp_path / "t.html", "Title")
    assert back.columns.tolist() == frame.columns.tolist()
    page = parse((tmp_path / "t.html").read_text(encoding="utf-8"))
    assert page.rows[1] == ["seeds <b>&", "36.84", "1", MISSING]
    script = load_script("report_tables")
    argv = ["--table", str(tmp_path / "t.csv"), str(tmp_path / "a.html"), "First"]
    argv += ["--table", str(tmp_path / "t.csv"), str(tmp_path / "b.html"), "Second"]
    assert script.main(argv) == 0
    assert parse((tmp_path / "a.html").read_text(encoding="utf-8")).h1 == "First"
    assert parse((tmp_path / "b.html").read_text(encoding="utf-8")).h1 == "Second"
    (tmp_path / "empty.csv").write_text("")
    argv = ["--table", str(tmp_path / "empty.csv"), str(tmp_path / "c.html"), "x"]
    assert script.main(argv) == 2
    assert "empty.csv" in capsys.readouterr().err
    assert not (tmp_path / "c.html").exists()
