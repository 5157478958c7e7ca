"""The demo/evaluation report: one self-contained HTML page (images referenced next to it)."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from .._atomic import write_text

_CSS = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;margin:.5em 0}"
        ".note{color:#555;font-size:.9em}")


def table_html(table: pd.DataFrame, *, digits: int = 3) -> str:
    """A DataFrame as an HTML table with numbers rounded to ``digits``."""
    return table.to_html(float_format=lambda v: f"{v:.{digits}f}", na_rep="", border=0, escape=True)


@dataclass
class Report:
    """Sections of headings, paragraphs, tables and images, written as ``report.html``."""

    title: str
    sections: list[tuple[str, list[str]]] = field(default_factory=list)

    def section(self, heading: str) -> list[str]:
        self.sections.append((heading, []))
        return self.sections[-1][1]

    def text(self, body: list[str], text: str, *, note: bool = False) -> None:
        body.append(f'<p class="note">{html.escape(text)}</p>' if note else f"<p>{html.escape(text)}</p>")

    def table(self, body: list[str], table: pd.DataFrame, *, caption: str | None = None) -> None:
        if caption:
            body.append(f"<p><b>{html.escape(caption)}</b></p>")
        body.append(table_html(table))

    def image(self, body: list[str], path: str | Path, *, root: Path, alt: str) -> None:
        rel = Path(path).resolve().relative_to(root.resolve())
        body.append(f'<img src="{html.escape(rel.as_posix())}" alt="{html.escape(alt)}">')

    def write(self, path: str | Path) -> Path:
        head = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>")
        parts = [head]
        parts.append("<ul>" + "".join(f'<li><a href="#s{i}">{html.escape(h)}</a></li>'
                                      for i, (h, _) in enumerate(self.sections)) + "</ul>")
        for i, (heading, body) in enumerate(self.sections):
            parts.append(f'<h2 id="s{i}">{html.escape(heading)}</h2>' + "\n".join(body))
        parts.append("</body></html>\n")
        return write_text(path, "\n".join(parts))
