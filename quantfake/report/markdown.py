"""Write ``report.md`` with its figures as PNG files beside it (renders on a code host)."""

from __future__ import annotations

from pathlib import Path

from quantfake.report.document import FigureBlock, Report, Table, Text
from quantfake.report.tables import to_markdown

__all__ = ["write_markdown"]


def _table_markdown(block: Table) -> str:
    frame = block.frame
    if block.highlight and any(block.highlight) and not frame.empty:
        frame = frame.copy()
        first = frame.columns[0]
        frame[first] = [f"**{v}**" if flag else v for v, flag in zip(frame[first], block.highlight, strict=True)]
    text = to_markdown(frame)
    return f"{text}\n\n_{block.caption}_" if block.caption else text


def write_markdown(report: Report, out_dir: Path, file_name: str = "report.md") -> Path:
    """Write the report and one PNG per figure into ``out_dir``; return the .md path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [f"# {report.title}", ""]
    lines += [f"- [{s.title}](#{s.anchor})" for s in report.sections] + [""]
    for section in report.sections:
        lines += [f"## {section.title}", ""]
        for block in section.blocks:
            if isinstance(block, Text):
                lines.append(block.text)
            elif isinstance(block, Table):
                lines.append(_table_markdown(block))
            elif isinstance(block, FigureBlock):
                (out_dir / f"{block.name}.png").write_bytes(block.png)
                alt = block.caption.replace("]", ")").replace("[", "(") or block.name
                lines.append(f"![{alt}]({block.name}.png)")
                if block.caption:
                    lines += ["", f"_{block.caption}_"]
            lines.append("")
    path = out_dir / file_name
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
