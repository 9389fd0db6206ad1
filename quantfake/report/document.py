"""A renderer-neutral report: sections of text, tables and figures.

Why: the HTML and Markdown writers must show the same content; they only
differ in how images travel (embedded vs. files next to report.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd

__all__ = ["Text", "Table", "FigureBlock", "Block", "Section", "Report", "slug"]


@dataclass
class Text:
    """A paragraph of plain text (escaped by the HTML writer)."""

    text: str


@dataclass
class Table:
    """A display frame of strings; ``highlight`` marks rows to flag (e.g. regressions)."""

    frame: pd.DataFrame
    caption: str = ""
    highlight: list[bool] | None = None


@dataclass
class FigureBlock:
    """A PNG figure; ``name`` is the file stem used next to report.md."""

    name: str
    png: bytes
    caption: str = ""


Block = Text | Table | FigureBlock


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return slug(self.title)


@dataclass
class Report:
    title: str
    sections: list[Section]

    def figures(self) -> list[FigureBlock]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, FigureBlock)]


def slug(text: str) -> str:
    """Lower-case, filesystem- and anchor-safe form of ``text``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "item"
