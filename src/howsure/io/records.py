"""Records (one dict per item) read from and written to JSONL, JSON, CSV, TSV and Parquet files,
and the one parser of JSON and JSONL records every reader of tables uses.

Pure Python: nothing here imports pandas except the Parquet branch, so the decision commands
(thresholds, route, plan) that read through it start quickly.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from howsure.errors import DataError
from howsure.io.spreadsheet import formula_safe

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
LIST_KEYS = ("results", "records", "items")  # where a JSON object keeps its list of records, by convention
LINE_PLACE = "{path}: line {line}"  # how a JSONL line is named in messages (read_records: "{path}:{line}")


def jsonl_records(path: Path, *, place: str = LINE_PLACE) -> tuple[list[int], list[dict]]:
    """The objects of a JSONL file and the 1-based line of each (blank lines hold no object).

    ``place`` formats where a bad line is, from ``path`` and ``line``, for the message."""
    lines, rows = [], []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = place.format(path=path, line=number)
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where} is not valid JSON: {exc.msg}") from None
            if not isinstance(row, dict):
                raise DataError(f"{where} is a JSON {type(row).__name__}, expected an object")
            lines.append(number)
            rows.append(row)
    return lines, rows


def json_records(path: Path, *, records_key: str | None = None) -> list[dict]:
    """The records of a JSON file: a list of objects, or an object holding one.

    The list is the one under ``records_key`` when given; else the object's only list-valued
    key; else the first of `LIST_KEYS` (``results``, ``records``, ``items``) that holds a list."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON: {exc}") from None
    if records_key is not None:
        if not isinstance(data, dict) or records_key not in data:
            raise DataError(f"{path}: has no top-level key {records_key!r}")
        data = data[records_key]
    elif isinstance(data, dict):
        lists = [k for k, v in data.items() if isinstance(v, list)]
        if len(lists) != 1:
            lists_by_convention = [k for k in LIST_KEYS if k in lists]
            if not lists_by_convention:
                raise DataError(
                    f"{path}: a JSON object must hold exactly one list of records to read, found "
                    f"{lists or 'none'}; name one with records_key"
                )
            lists = lists_by_convention
        data = data[lists[0]]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        found = type(data).__name__ if not isinstance(data, list) else "a list holding other values"
        raise DataError(f"{path}: expected a list of JSON objects, got {found}")
    return data


def read_records(path: Path, *, records_key: str | None = None) -> list[dict[str, Any]]:
    """Records of a JSONL, JSON (see `json_records`), CSV, TSV or Parquet file, as dicts.

    CSV and TSV cells stay strings; an empty file is an error (no records to decide on)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"cannot read {str(path)!r}: expected one of {', '.join(TABLE_SUFFIXES)}")
    if suffix == ".parquet":
        import pandas as pd  # only Parquet needs it; keeps the other formats quick to start

        records = pd.read_parquet(path).to_dict(orient="records")
    elif suffix == ".jsonl":
        records = jsonl_records(path, place="{path}:{line}")[1]
    elif suffix == ".json":
        records = json_records(path, records_key=records_key)
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if not records:
        raise DataError(f"{path} holds no records")
    return records


def write_records(records: list[dict[str, Any]], path: Path) -> None:
    """Write records as JSONL, CSV or TSV (by suffix); CSV/TSV columns are the union of keys in
    first-seen order, objects and lists JSON-encoded, and formula-like cells quoted."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        columns: list[str] = []
        for record in records:
            columns.extend(k for k in record if k not in columns)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            for record in records:
                # Texts come from users: a cell a spreadsheet would run as a formula is quoted.
                writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else formula_safe(v)
                                 for k, v in record.items()})
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        raise DataError(f"cannot write {str(path)!r}: expected .jsonl, .csv or .tsv")
