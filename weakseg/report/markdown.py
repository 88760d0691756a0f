"""Markdown reports: sections with text, tables from lists of dicts, and images linked relative to the report."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weakseg.io import atomic_write_text


@dataclass
class Section:
    """One report section: a heading, free Markdown text, tables (lists of row dicts) and images (path, caption)."""

    heading: str
    text: str = ""
    tables: list[Sequence[Mapping[str, Any]]] = field(default_factory=list)
    images: list[tuple[str | os.PathLike, str]] = field(default_factory=list)


def _cell(value: Any, floatfmt: str) -> str:
    """One table cell: floats formatted, None/nan as an en dash, pipes and newlines escaped."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, float):
        text = format(value, floatfmt)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None, floatfmt: str = ".3f"
) -> str:
    """A GitHub-flavoured Markdown table; columns default to the keys in first-seen order, missing cells empty."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    if not columns:
        return ""
    lines = [
        "| " + " | ".join(_cell(c, floatfmt) for c in columns) + " |",
        "|" + "|".join(" --- " for _ in columns) + "|",
    ]
    for row in rows:
        lines.append("| " + " | ".join(_cell(row[c], floatfmt) if c in row else "" for c in columns) + " |")
    return "\n".join(lines) + "\n"


def image_link(image: str | os.PathLike, report_path: str | os.PathLike, alt: str = "") -> str:
    """Markdown image link to `image`, relative to the report's folder (POSIX separators)."""
    rel = os.path.relpath(os.path.abspath(image), os.path.dirname(os.path.abspath(report_path)))
    rel = Path(rel).as_posix().replace(" ", "%20").replace("(", "%28").replace(")", "%29")
    return f"![{alt.replace(']', '')}]({rel})"


def render_report(report_path: str | os.PathLike, title: str, sections: Sequence[Section]) -> str:
    """The Markdown text of a report that will live at report_path."""
    parts = [f"# {title}\n"]
    for s in sections:
        parts.append(f"## {s.heading}\n")
        if s.text:
            parts.append(s.text.rstrip() + "\n")
        for table in s.tables:
            if table:
                parts.append(markdown_table(table))
        for image, caption in s.images:
            parts.append(image_link(image, report_path, caption) + "\n")
            if caption:
                parts.append(f"*{caption}*\n")
    return "\n".join(parts)


def write_report(path: str | os.PathLike, title: str, sections: Sequence[Section]) -> Path:
    """Write a Markdown report atomically to path (images linked relative to it); returns the path."""
    path = Path(path)
    atomic_write_text(path, render_report(path, title, sections))
    return path
