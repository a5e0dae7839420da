"""Reading labelled and unlabelled texts: CSV, TSV, JSONL, JSON and Parquet, and bundled samples.

Rows are never dropped silently: a blank line of a CSV/TSV is a row (an empty text), and
`extract_texts` reports every empty or non-text row as "row N (line M)" (1-based, the line where
the row starts in the file), and the caller decides whether that is fatal or skipped.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pandas as pd

from howsure.errors import DataError

FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl",
           ".json": "json", ".parquet": "parquet", ".pq": "parquet"}


def read_table(path: str | Path, *, format: str | None = None, records_key: str | None = None) -> pd.DataFrame:
    """Read a table from CSV, TSV, JSONL, JSON (a list of records, or an object holding one list
    of records, e.g. ``{"results": [...]}``) or Parquet, chosen by extension or ``format``.

    Text columns are kept as strings exactly as written (no NA guessing: "NA" is a text), and a
    blank line of a CSV/TSV is kept as a row of empty values, so it is reported, not dropped."""
    return read_table_with_lines(path, format=format, records_key=records_key)[0]


def read_table_with_lines(
    path: str | Path, *, format: str | None = None, records_key: str | None = None
) -> tuple[pd.DataFrame, list[int] | None]:
    """`read_table`, plus the 1-based file line where each row starts (CSV, TSV, JSONL), so that
    messages can point at a line a user can find; ``None`` for formats without lines."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input file {str(path)!r} does not exist")
    kind = format or FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(
            f"cannot tell the format of {str(path)!r} from its extension {path.suffix!r}; "
            f"use one of {', '.join(sorted(FORMATS))} or pass a format"
        )
    try:
        if kind in ("csv", "tsv"):
            sep = "," if kind == "csv" else "\t"
            leading = _leading_blank_lines(path)
            frame = pd.read_csv(path, sep=sep, keep_default_na=False, na_values=[], dtype=object,
                                quoting=0, skip_blank_lines=False, skiprows=leading)
            if frame.isna().any(axis=None):  # a blank line (or a short row) may come as NaN: empty values
                frame = frame.fillna("")
            return frame, _csv_row_lines(path, sep, leading, len(frame))
        if kind == "jsonl":
            lines, records = _read_jsonl(path)
            return pd.DataFrame(records), lines
        if kind == "json":
            return pd.DataFrame(_json_records(json.loads(path.read_text("utf-8")), path, records_key)), None
        if kind == "parquet":
            return pd.read_parquet(path), None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"could not read {str(path)!r} as {kind}: {exc}") from exc
    raise DataError(f"unknown format {kind!r}; use one of csv, tsv, jsonl, json, parquet")


def _leading_blank_lines(path: Path) -> int:
    """Blank lines before a CSV's header (pandas would otherwise take the first as the header)."""
    count = 0
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        for line in handle:
            if line.strip():
                break
            count += 1
    return count


def _csv_row_lines(path: Path, sep: str, leading: int, n_rows: int) -> list[int] | None:
    """First file line (1-based) of each data row; a quoted field may span several lines.

    ``None`` when Python's csv reader and pandas disagree on the number of rows (then messages
    give row numbers only, never a wrong line)."""
    starts = []
    end = 0
    try:
        with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
            reader = csv.reader(handle, delimiter=sep)
            for _ in reader:
                starts.append(end + 1)
                end = reader.line_num
    except csv.Error:
        return None
    data = starts[leading + 1:]  # blank lines before the header, then the header
    return data if len(data) == n_rows else None


def _read_jsonl(path: Path) -> tuple[list[int], list[dict]]:
    """The objects of a JSONL file and the line of each (blank lines hold no object)."""
    lines, rows = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number} is not valid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, expected an object")
            lines.append(number)
            rows.append(row)
    return lines, rows


def _json_records(data, path: Path, key: str | None) -> list[dict]:
    if key is not None:
        if not isinstance(data, dict) or key not in data:
            raise DataError(f"{path}: has no top-level key {key!r}")
        data = data[key]
    elif isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(
                f"{path}: a JSON object must hold exactly one list of records to read, found "
                f"{lists or 'none'}; name one with records_key"
            )
        data = data[lists[0]]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a list of JSON objects")
    return data


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
