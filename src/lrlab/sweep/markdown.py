"""Markdown table pieces shared by the sweep report's sections (`lrlab.sweep.report`,
`lrlab.sweep.seeds`): every table is built from one column list, so its header, delimiter and rows
have the same width (markdown renders no table otherwise)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table_head(columns: Sequence[str]) -> list[str]:
    """A markdown table's header and delimiter rows, one cell per column."""
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def table_row(cells: Sequence[str], width: int) -> str:
    """A markdown table row padded with empty cells to `width` columns."""
    return "| " + " | ".join([*cells, *[""] * (width - len(cells))]) + " |"


def param_cell(value: Any) -> str:
    """A trial param's value as a cell: floats to 3 significant digits, None as `n/a`, others as given."""
    if isinstance(value, float):
        return format(value, ".3g")
    return "n/a" if value is None else str(value)
