"""Texts pulled out of a table for scoring: ids, optional gold labels, and every row left out with
the reason, named by row and file line; and the bundled sample files.

`extract_texts` reports every empty or non-text row as "row N (line M)" (1-based, the line where
the row starts in the file), and the caller decides whether that is fatal or skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from howsure.errors import DataError
from howsure.io.tables import read_table_with_lines


def require_column(frame: pd.DataFrame, column: str, what: str) -> None:
    if column not in frame.columns:
        raise DataError(
            f"{what} column {column!r} is not in the input; columns are: {', '.join(map(str, frame.columns))}"
        )


@dataclass
class TextRows:
    """Texts pulled out of a table, and what was wrong with the rows left out.

    ``row_numbers`` and the row numbers in ``invalid`` are 0-based positions in the table (the
    ``row`` field of `howsure score` output); ``lines`` maps them to the 1-based file line
    where each row starts, when the format has lines. Name a row to a user with `where`."""

    row_numbers: list[int]
    texts: list[str]
    ids: list[str]
    labels: list[str | None]
    invalid: list[tuple[int, str]] = field(default_factory=list)
    lines: list[int] | None = None

    def where(self, row: int) -> str:
        """``"row 3 (line 4)"``: the 1-based row, and its line in the file when known."""
        if self.lines is not None and 0 <= row < len(self.lines):
            return f"row {row + 1} (line {self.lines[row]})"
        return f"row {row + 1}"


def extract_texts(
    frame: pd.DataFrame,
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = None,
    lines: list[int] | None = None,
) -> TextRows:
    """Pull texts, ids and optional gold labels out of ``frame``.

    An empty, blank or non-string text is listed in ``invalid`` as (row number, reason) instead
    of being returned (a blank line of a CSV is an empty text). Ids default to the row number and must be unique. ``lines``: the file line of each row of
    ``frame``, from `read_table_with_lines`, for messages."""
    require_column(frame, text_column, "text")
    if id_column:
        require_column(frame, id_column, "id")
    if label_column:
        require_column(frame, label_column, "label")
    rows = TextRows([], [], [], [], lines=lines if lines is not None and len(lines) >= len(frame) else None)
    seen: dict[str, int] = {}
    for number, record in enumerate(frame.to_dict("records")):
        value = record[text_column]
        ident = str(record[id_column]) if id_column else str(number)
        if ident in seen:
            raise DataError(
                f"id {ident!r} appears in {rows.where(seen[ident])} and {rows.where(number)}; ids must be unique"
            )
        seen[ident] = number
        if not isinstance(value, str):
            missing = value is None or (isinstance(value, float) and math.isnan(value))
            rows.invalid.append((number, "missing text" if missing else f"not text: {value!r}"))
            continue
        if not value.strip():
            rows.invalid.append((number, "empty text"))
            continue
        label = record[label_column] if label_column else None
        rows.row_numbers.append(number)
        rows.texts.append(value)
        rows.ids.append(ident)
        rows.labels.append(None if label is None else str(label))
    return rows


def read_texts(
    path: str | Path,
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = None,
) -> TextRows:
    """`read_table_with_lines` then `extract_texts`: the texts of a file, rows named by line."""
    frame, lines = read_table_with_lines(path)
    return extract_texts(frame, text_column, id_column, label_column, lines)


def sample_path(name: str) -> Path:
    """Path of a bundled sample data file (see ``howsure/samples/README.md``)."""
    path = Path(str(resources.files("howsure.samples").joinpath(name)))
    if not path.exists():
        raise DataError(f"no bundled sample {name!r}")
    return path
