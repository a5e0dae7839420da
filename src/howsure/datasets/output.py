"""Writing generated or loaded rows as the tables the rest of howsure reads (CSV, TSV, JSONL)."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from howsure.errors import DataError

WRITERS = (".csv", ".tsv", ".jsonl")


def write_rows(rows: Iterable[dict], path: str | Path, columns: Sequence[str]) -> Path:
    """Write ``rows`` (only ``columns``, in that order) to ``path`` as CSV, TSV or JSONL, chosen
    by its extension; the folder is created. Returns the path."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in WRITERS:
        raise DataError(f"cannot write {str(path)!r}: extension {path.suffix!r} is not one of {', '.join(WRITERS)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        if suffix == ".jsonl":
            for row in rows:
                handle.write(json.dumps({column: row[column] for column in columns}, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(handle, list(columns), delimiter="\t" if suffix == ".tsv" else ",",
                                    extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return path
