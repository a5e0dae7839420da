"""The public 8-category sentiment set (``seed_cwc``), read without its flaws.

The set is one text a line in ``<category>.txt`` files (``strong_positive.txt``, ...; the label is
the category's polarity). As published it has 1,199 duplicate lines (10,000 lines, 8,801
distinct texts) and a train/test split made by line, not by text, so copies straddle it: 270
lines of its 2,000-line test set (120 distinct texts) have a copy in training. This loader:

* keeps the first copy of each text (files in sorted name order, lines in file order) and
  counts the dropped copies;
* drops every copy of a text that appears under categories of different polarity (its label is
  unknowable) and counts those texts; a text under two categories of the same polarity keeps
  its first category;
* splits by content hash (`howsure.datasets.hash_split`), so no text is on two sides, instead
  of reusing the published split;
* infers each text's domain with a keyword rule (`infer_domain`).

Domain rule: a text is ``sports`` when it holds more words of `SPORTS_WORDS` than of
`WORK_WORDS`, ``work`` when the other way round, and ``other`` on a tie (including none).
Words are matched whole and lower-cased, as written or less a trailing 's or plural s.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from howsure.datasets.hash_split import DEFAULT_FRACTIONS, check_fractions, hash_sides, text_hash
from howsure.datasets.seed_sentiment import CATEGORIES
from howsure.errors import DataError

DEFAULT_SOURCE = Path("../shared/data/sentiment/seed_cwc")

SPORTS_WORDS = frozenset("""
archery arena athlete athletic athletics badminton ball baseball basketball bat bowling boxer boxing
champion championship climbing coach coaching competition court cricket cycling cyclist dribble
fencing fitness fixture football game goalkeeper golf gymnast gymnastic gymnastics hiking hockey
inning javelin lacrosse league marathon martial match medal olympic olympics opponent player
playoff practice race racing recreational referee relay rowing rugby runner scrimmage season skateboarding
ski skiing skating soccer softball sport sprint sprinter stadium surfing swim swimmer swimming tennis
tournament volleyball wrestling yoga
""".split())
WORK_WORDS = frozenset("""
audit board boss briefing budget business career client colleague collaboration company competitor
conference corporate coworker deadline department deliverable director email employee employer
executive hr invoice job kpi manager management market meeting memo objective office onboarding
organization organisation payroll presentation printer project promotion proposal quarter quarterly
report revenue salary shift spreadsheet staff stakeholder supervisor supplier timesheet vendor
workflow workplace workload
""".split())
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def _keyword(word: str, keywords: frozenset[str]) -> bool:
    """Whether a word, or it less a trailing 's or plural s, is one of ``keywords``."""
    if word in keywords:
        return True
    if word.endswith("'s"):
        word = word[:-2]
    elif len(word) > 3 and word.endswith("s"):
        word = word[:-1]
    return word in keywords


def infer_domain(text: str) -> str:
    """``sports``, ``work`` or ``other`` by the keyword rule of the module docstring."""
    words = _WORD.findall(text.lower())
    sports = sum(_keyword(word, SPORTS_WORDS) for word in words)
    work = sum(_keyword(word, WORK_WORDS) for word in words)
    return "sports" if sports > work else "work" if work > sports else "other"


@dataclass
class SeedCwc:
    """The deduplicated set and how it was made.

    rows : list of dicts with ``id``, ``text``, ``label``, ``category``, ``domain``, ``split``
        (``id`` is ``<category>-<line>``, the file line of the kept copy, 1-based).
    counts : lines read, duplicate lines dropped, conflicting texts dropped, rows kept, per split
    conflicts : the texts dropped for conflicting polarity, with the categories they were under
    """

    rows: list[dict[str, str]]
    counts: dict[str, Any]
    conflicts: list[dict[str, Any]] = field(default_factory=list)
    fractions: dict[str, float] = field(default_factory=dict)
    salt: str = ""

    def split(self, name: str) -> list[dict[str, str]]:
        """The rows of one side (``train``, ``calibration``, ``test`` by default)."""
        if name not in self.fractions:
            raise DataError(f"split {name!r} is not one of {list(self.fractions)}")
        return [row for row in self.rows if row["split"] == name]

    def manifest(self) -> dict[str, Any]:
        """What a reader needs to trust the files: counts, rules, and the hashes of each side."""
        return {
            "format": "howsure.seed_cwc", "version": 1,
            "counts": self.counts,
            "split_rule": "side by sha256(salt + 'text:' + text), first 16 hex digits as a fraction of 16**16, "
                          "against the cumulative fractions in order",
            "fractions": self.fractions, "salt": self.salt,
            "duplicates": "first copy kept (files in sorted name order); texts under categories of "
                          "different polarity dropped",
            "domain_rule": "more sports than work keywords -> sports, the reverse -> work, a tie -> other",
            "conflicts": self.conflicts,
            "hashes": {name: sorted(text_hash(row["text"]) for row in self.split(name)) for name in self.fractions},
        }


def category_files(source: str | Path) -> dict[str, Path]:
    """Category -> its file in ``source``; raises DataError when the folder or a file is missing."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"seed_cwc folder {str(source)!r} does not exist; expected the folder of "
                        f"{', '.join(c + '.txt' for c in CATEGORIES)}")
    files = {category: source / f"{category}.txt" for category in sorted(CATEGORIES)}
    missing = [path.name for path in files.values() if not path.is_file()]
    if missing:
        raise DataError(f"seed_cwc folder {str(source)!r} lacks {', '.join(missing)}")
    return files


def load_seed_cwc(source: str | Path = DEFAULT_SOURCE, *, fractions: dict[str, float] | None = None,
                  salt: str = "") -> SeedCwc:
    """Read, deduplicate, label, infer domains and split the set (see the module docstring).

    Parameters
    ----------
    source : folder holding the eight ``<category>.txt`` files
    fractions : side -> fraction, summing to 1 (default train 0.6, calibration 0.2, test 0.2)
    salt : another salt gives another content-hash split
    """
    fractions = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    first: dict[str, tuple[str, int]] = {}  # text -> (category, line) of its first copy
    categories_of: dict[str, list[str]] = {}
    n_lines = n_blank = 0
    for category, path in category_files(source).items():
        try:
            lines = path.read_text("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise DataError(f"{str(path)!r} is not UTF-8 text: {exc}") from None
        for number, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                n_blank += 1
                continue
            n_lines += 1
            first.setdefault(text, (category, number))
            categories_of.setdefault(text, []).append(category)
    conflicts = []
    for text, categories in categories_of.items():
        polarities = {category.rsplit("_", 1)[1] for category in categories}
        if len(polarities) > 1:
            conflicts.append({"text": text, "categories": sorted(set(categories))})
    conflicting = {entry["text"] for entry in conflicts}
    kept = [(text, *where) for text, where in first.items() if text not in conflicting]
    sides = hash_sides([text for text, _, _ in kept], fractions, salt=salt)
    rows = [{"id": f"{category}-{line}", "text": text, "label": category.rsplit("_", 1)[1],
             "category": category, "domain": infer_domain(text), "split": side}
            for (text, category, line), side in zip(kept, sides)]
    per_split = Counter(row["split"] for row in rows)
    counts = {
        "lines": n_lines, "blank_lines": n_blank,
        # lines = rows + duplicate_lines_dropped + conflicting_lines_dropped
        "duplicate_lines_dropped": sum(len(categories_of[text]) - 1 for text, _, _ in kept),
        "conflicting_texts_dropped": len(conflicts),
        "conflicting_lines_dropped": sum(len(categories_of[text]) for text in conflicting),
        "rows": len(rows),
        "per_split": {name: per_split.get(name, 0) for name in fractions},
        "per_category": dict(sorted(Counter(row["category"] for row in rows).items())),
        "per_label_domain": {label: {domain: sum(row["label"] == label and row["domain"] == domain for row in rows)
                                     for domain in ("sports", "work", "other")} for label in ("positive", "negative")},
    }
    return SeedCwc(rows, counts, conflicts, dict(fractions), salt)
