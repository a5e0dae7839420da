"""Reading labelled and unlabelled texts: CSV, TSV, JSONL, JSON and Parquet, and bundled samples.

Rows are never dropped silently: `extract_texts` reports every empty or non-text row by its
row number, and the caller decides whether that is fatal or skipped.
"""

from __future__ import annotations

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

    Text columns are kept as strings exactly as written (no NA guessing: "NA" is a text)."""
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
            return pd.read_csv(path, sep="," if kind == "csv" else "\t", keep_default_na=False,
                               na_values=[], dtype=object, quoting=0)
        if kind == "jsonl":
            return pd.DataFrame(_read_jsonl(path))
        if kind == "json":
            return pd.DataFrame(_json_records(json.loads(path.read_text("utf-8")), path, records_key))
        if kind == "parquet":
            return pd.read_parquet(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"could not read {str(path)!r} as {kind}: {exc}") from exc
    raise DataError(f"unknown format {kind!r}; use one of csv, tsv, jsonl, json, parquet")


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
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
            rows.append(row)
    return rows


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
    """Texts pulled out of a table, with row numbers (0-based data rows) and what was wrong."""

    row_numbers: list[int]
    texts: list[str]
    ids: list[str]
    labels: list[str | None]
    invalid: list[tuple[int, str]] = field(default_factory=list)


def extract_texts(
    frame: pd.DataFrame,
    text_column: str = "text",
    id_column: str | None = None,
    label_column: str | None = None,
) -> TextRows:
    """Pull texts, ids and optional gold labels out of ``frame``.

    An empty, blank or non-string text is listed in ``invalid`` as (row number, reason) instead
    of being returned. Ids default to the row number and must be unique."""
    require_column(frame, text_column, "text")
    if id_column:
        require_column(frame, id_column, "id")
    if label_column:
        require_column(frame, label_column, "label")
    rows = TextRows([], [], [], [])
    seen: dict[str, int] = {}
    for number, record in enumerate(frame.to_dict("records")):
        value = record[text_column]
        ident = str(record[id_column]) if id_column else str(number)
        if ident in seen:
            raise DataError(f"id {ident!r} appears in rows {seen[ident]} and {number}; ids must be unique")
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


def sample_path(name: str) -> Path:
    """Path of a bundled sample data file (see ``howsure/samples/README.md``)."""
    path = Path(str(resources.files("howsure.samples").joinpath(name)))
    if not path.exists():
        raise DataError(f"no bundled sample {name!r}")
    return path
