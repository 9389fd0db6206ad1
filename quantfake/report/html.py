"""Write a self-contained ``index.html``: figures embedded as base64 PNG data URIs.

Why self-contained: the file opens from disk, from a CI artefact or an e-mail
attachment without its folder.
"""

from __future__ import annotations

import base64
import html as html_lib
from pathlib import Path

from quantfake.report.document import FigureBlock, Report, Table, Text
from quantfake.report.tables import to_html

__all__ = ["write_html", "render_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; }
table.data { border-collapse: collapse; font-size: 0.85em; margin: 0.5em 0 1.5em; }
table.data th, table.data td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; }
table.data th { background: #f0f0f0; }
mark.regression { background: #f8d0d0; font-weight: bold; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption, .caption { color: #444; font-size: 0.85em; }
nav li { display: inline; margin-right: 1em; }
"""


def _block_html(block: object) -> str:
    if isinstance(block, Text):
        return f"<p>{html_lib.escape(block.text)}</p>"
    if isinstance(block, Table):
        caption = f'<p class="caption">{html_lib.escape(block.caption)}</p>' if block.caption else ""
        return to_html(block.frame, block.highlight) + caption
    if isinstance(block, FigureBlock):
        data = base64.b64encode(block.png).decode("ascii")
        caption = html_lib.escape(block.caption)
        return (f'<figure><img alt="{html_lib.escape(block.name)}" '
                f'src="data:image/png;base64,{data}"><figcaption>{caption}</figcaption></figure>')
    raise TypeError(f"unknown report block {type(block).__name__}; accepted: Text, Table, FigureBlock")


def render_html(report: Report) -> str:
    """The whole page as one string."""
    title = html_lib.escape(report.title)
    nav = "".join(f'<li><a href="#{s.anchor}">{html_lib.escape(s.title)}</a></li>'
                  for s in report.sections)
    body = "\n".join(
        f'<section id="{s.anchor}"><h2>{html_lib.escape(s.title)}</h2>\n'
        + "\n".join(_block_html(b) for b in s.blocks) + "</section>"
        for s in report.sections
    )
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{title}</title><style>{_STYLE}</style></head><body>"
            f"<h1>{title}</h1><nav><ul>{nav}</ul></nav>\n{body}\n</body></html>\n")


def write_html(report: Report, out_dir: Path, file_name: str = "index.html") -> Path:
    """Write the self-contained page into ``out_dir``; return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / file_name
    path.write_text(render_html(report), encoding="utf-8")
    return path
