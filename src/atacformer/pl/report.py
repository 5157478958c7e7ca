"""The demo/evaluation report: one self-contained HTML page (images referenced next to it)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._atomic import write_text

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
        ".note{color:#555;font-size:.9em}dt{font-weight:bold;margin-top:.4em}dd{margin-left:1.5em}")


def table_html(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A DataFrame as an HTML table: floats rounded to ``digits``, integers as integers, missing values
    empty, and a single header row (a named index becomes the first column's header).

    Parameters
    ----------
    table
        The table; its index becomes the first column.
    digits
        Decimals of floating-point cells.

    Returns
    -------
    The ``<table>`` element as a string.
    """
    name = table.index.name or ""
    flat = table.reset_index(names=name or "index")
    if not name:
        flat = flat.rename(columns={"index": ""})
    cells = flat.apply(lambda col: col.astype(object).map(lambda v: _fmt(v, digits)))
    return cells.to_html(index=False, border=0, escape=True)


def _fmt(v, digits: int) -> str:
    if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


@dataclass
class Report:
    """An HTML page of sections (headings, paragraphs, lists, tables, images), written as one file.

    Parameters
    ----------
    title
        Page title and top heading.
    sections
        ``(heading, [html fragments])``; :meth:`section` appends one.
    """

    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def section(self, heading: str) -> list[str]:
        """Start a section; returns its body, to pass to the other methods."""
        self.sections.append((heading, []))
        return self.sections[-1][1]

    def text(self, body: list[str], text: str, *, note: bool = False) -> None:
        """A paragraph (escaped); ``note`` renders it smaller and grey."""
        body.append(f'<p class="note">{html.escape(text)}</p>' if note else f"<p>{html.escape(text)}</p>")

    def items(self, body: list[str], items: dict[str, str]) -> None:
        """A definition list: ``{term: explanation}`` (both escaped)."""
        body.append("<dl>" + "".join(f"<dt>{html.escape(k)}</dt><dd>{html.escape(v)}</dd>" for k, v in items.items())
                    + "</dl>")

    def table(self, body: list[str], table: pd.DataFrame, *, caption: str | None = None, digits: int = 3) -> None:
        """A table (:func:`table_html`, floats to ``digits`` decimals) with an optional bold caption above it."""
        if caption:
            body.append(f"<p><b>{html.escape(caption)}</b></p>")
        body.append(table_html(table, digits=digits))

    def image(self, body: list[str], path: str | Path, *, root: Path, alt: str) -> None:
        """An image referenced relative to ``root`` (the folder of the page)."""
        rel = Path(path).resolve().relative_to(root.resolve())
        body.append(f'<img src="{html.escape(rel.as_posix())}" alt="{html.escape(alt)}">')

    def write(self, path: str | Path) -> Path:
        """Write the page atomically; returns its path."""
        head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>")
        parts = [head]
        parts.append("<ul>" + "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>'
                                      for i, (h, _) in enumerate(self.sections)) + "</ul>")
        for i, (heading, body) in enumerate(self.sections):
            parts.append(f'<h2 id="s{i}">{html.escape(heading)}</h2>' + "\n".join(body))
        parts.append("</body></html>\n")
        return write_text(path, "\n".join(parts))
