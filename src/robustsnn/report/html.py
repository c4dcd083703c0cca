"""A self-contained ``report.html`` from the Markdown report (tables, headings, inline PNGs)."""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.45}table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;"
    "padding:.25rem .6rem;text-align:right}td:first-child,th:first-child{text-align:left}"
    "img{max-width:100%}code{background:#f3f3f3;padding:0 .2rem}"
)


def _inline(text: str) -> str:
    text = html.escape(text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def _image(alt: str, src: str, base: Path) -> str:
    path = base / src
    if path.exists():
        data = base64.b64encode(path.read_bytes()).decode()
        src = f"data:image/png;base64,{data}"
    return f'<p><img alt="{html.escape(alt)}" src="{src}"></p>'


def markdown_to_html(markdown: str, base: Path, title: str = "robustsnn report") -> str:
    """Convert the subset of Markdown the reports use; images under ``base`` are embedded."""
    out: list[str] = []
    table: list[list[str]] = []

    def flush_table() -> None:
        if not table:
            return
        head, *rows = table
        out.append("<table><thead><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in head))
        out.append("</tr></thead><tbody>")
        for row in rows:
            out.append("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>")
        out.append("</tbody></table>")
        table.clear()

    for line in markdown.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= {"-", ":"} for c in cells):
                table.append(cells)
            continue
        flush_table()
        image = re.fullmatch(r"!\[(.*)\]\((.+)\)", line.strip())
        if image:
            out.append(_image(image.group(1), image.group(2), base))
        elif line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            out.append(f"<h{level}>{_inline(line[level:].strip())}</h{level}>")
        elif line.strip():
            out.append(f"<p>{_inline(line)}</p>")
    flush_table()
    body = "\n".join(out)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
