"""Tables as pandas DataFrames: CSV, TSV, JSONL, JSON and Parquet, with the file line of each row.

Rows are never dropped silently: a blank line of a CSV/TSV is a row (of empty values), and each
row's 1-based starting line is kept so that messages can name a line a user can find. JSON and
JSONL are parsed by `howsure.io.records`, the one parser of JSON records.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd

from howsure.errors import DataError
from howsure.io.records import json_records, jsonl_records

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
            lines, records = jsonl_records(path)
            return pd.DataFrame(records), lines
        if kind == "json":
            return pd.DataFrame(json_records(path, records_key=records_key)), None
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
