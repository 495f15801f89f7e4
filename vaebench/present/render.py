"""Render a report's sections to one self-contained HTML file and a Markdown twin.

Both come from the same ``Section`` list, so they never disagree. Every string that reaches
HTML goes through ``html.escape``: plugin names, file names and settings are user input.
"""

from __future__ import annotations

import base64
import html
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from matplotlib.figure import Figure

from vaebench.io import atomic_write_bytes, atomic_write_text


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column) cells to highlight
    text_columns: int = 1  # leading columns of words (left-aligned); the rest are numbers


@dataclass
class Plot:
    name: str  # file stem for the Markdown twin
    figure: Figure
    caption: str = ""


Block = str | Table | Plot


@dataclass
class Section:
    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    folded: bool = False  # HTML: closed under its title (<details>), for reference material


CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th { background: #f3f3f3; }
td.text, th.text { text-align: left; }
p, figcaption { overflow-wrap: anywhere; }
td { overflow-wrap: break-word; }
/* a long name wraps anywhere, but a short one keeps its line */
td.text { overflow-wrap: anywhere; min-width: 16ch; }
td.best { background: #d9f2d9; font-weight: bold; }
.scroll { overflow-x: auto; max-width: 100%; }
.scroll td:first-child, .scroll th:first-child { position: sticky; left: 0; background: #fff; }
.scroll th:first-child { background: #f3f3f3; }
details > summary { cursor: pointer; }
img { max-width: 100%; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def figure_png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def _html_table(table: Table) -> str:
    def attrs(r: int, c: int) -> str:
        classes = [
            n for n, on in (("text", c < table.text_columns), ("best", (r, c) in table.best)) if on
        ]
        return f' class="{" ".join(classes)}"' if classes else ""

    head = "".join(f"<th{attrs(-1, c)}>{html.escape(h)}</th>" for c, h in enumerate(table.headers))
    body = []
    for r, row in enumerate(table.rows):
        cells = "".join(f"<td{attrs(r, c)}>{html.escape(v)}</td>" for c, v in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    table_html = f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    return f'<div class="scroll">{table_html}</div>'  # a wide table scrolls in its own box


def _slug(text: str) -> str:
    """A section id safe in an attribute and a URL fragment (run names are folder names)."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "section"


def _md_escape(text: str) -> str:
    return re.sub(r"([|\\`*_<>\[\]])", r"\\\1", text)


def _md_table(table: Table) -> str:
    lines = ["| " + " | ".join(_md_escape(h) for h in table.headers) + " |"]
    lines.append(
        "| "
        + " | ".join("---" if c < table.text_columns else "---:" for c in range(len(table.headers)))
        + " |"
    )
    for r, row in enumerate(table.rows):
        cells = [
            f"**{_md_escape(v)}**" if (r, c) in table.best and v else _md_escape(v)
            for c, v in enumerate(row)
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(sections: list[Section], title: str, html_path: Path) -> tuple[Path, Path]:
    """Write ``html_path`` and ``report.md`` beside it, with PNGs in ``<stem>_figures/``."""
    md_path = html_path.with_name(f"{html_path.stem}.md")
    figure_dir = html_path.with_name(f"{html_path.stem}_figures")
    figure_dir.mkdir(parents=True, exist_ok=True)
    html_parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    md_parts = [f"# {_md_escape(title)}"]
    for section in sections:
        heading = f"<h2>{html.escape(section.title)}</h2>"
        if section.folded:
            heading = f"<details><summary>{heading}</summary>"
        html_parts.append(f'<section id="{_slug(section.id)}">{heading}')
        md_parts.append(f"## {_md_escape(section.title)}")
        for block in section.blocks:
            if isinstance(block, str):
                html_parts.append(f"<p>{html.escape(block)}</p>")
                md_parts.append(_md_escape(block))
            elif isinstance(block, Table):
                html_parts.append(_html_table(block))
                md_parts.append(_md_table(block))
            else:
                png = figure_png(block.figure)
                atomic_write_bytes(figure_dir / f"{block.name}.png", png)
                data = base64.b64encode(png).decode("ascii")
                caption = html.escape(block.caption)
                html_parts.append(
                    f'<figure><img alt="{caption}" src="data:image/png;base64,{data}">'
                    f"<figcaption>{caption}</figcaption></figure>"
                )
                md_parts.append(
                    f"![{_md_escape(block.caption)}]({figure_dir.name}/{block.name}.png)"
                )
        html_parts.append("</details></section>" if section.folded else "</section>")
    html_parts.append("</body></html>")
    atomic_write_text(html_path, "\n".join(html_parts) + "\n")
    atomic_write_text(md_path, "\n\n".join(md_parts) + "\n")
    return html_path, md_path
