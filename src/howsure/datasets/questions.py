"""Questions with gold answers for `howsure qa`: files read as they are, and a seeded generator of
simple closed-form questions.

Files (CSV, TSV, JSONL, JSON, Parquet through `howsure.io.tables`):

* the question is the first of ``question``, ``problem``, ``query`` found (NQ-open has
  ``question``, SimpleQA ``problem``), or the column named;
* the gold answers are the first of ``answer``, ``answers``, ``gold`` found, or the column named.
  A list (NQ-open's JSONL) gives every alias. A string that is a JSON list (``["Paris", "Paris,
  France"]``, as a CSV cell may hold one) is read as that list. Any other string is one answer,
  or, when ``separator`` is given, is split on it (``"Paris|Paris, France"`` with ``"|"``);
  SimpleQA's answers are single strings and contain commas, so nothing is split by default.
* ids come from an ``id`` column when there is one (or the column named), else the row number.

A file without a question column, a row with an empty question or an empty answer list is a
`DataError` naming the column, row and value.

`closed_form_questions` makes questions a 135M-parameter model answers right often enough for
AUROC to mean something (docs/answers.md gives how often, measured with ``howsure qa``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from howsure.errors import DataError

QUESTION_COLUMNS = ("question", "problem", "query")
ANSWER_COLUMNS = ("answer", "answers", "gold")


@dataclass(frozen=True)
class Question:
    """One question and every gold answer (aliases) it may be judged against."""

    id: str
    question: str
    gold: tuple[str, ...]


def _pick(columns: Sequence[str], wanted: str | None, candidates: tuple[str, ...], what: str) -> str:
    if wanted is not None:
        if wanted not in columns:
            raise DataError(f"{what} column {wanted!r} is not in the input; columns are: {', '.join(map(str, columns))}")
        return wanted
    for name in candidates:
        if name in columns:
            return name
    raise DataError(f"the input has no {what} column (looked for {', '.join(candidates)}); columns are: "
                    f"{', '.join(map(str, columns))}; name it with --{what}-column")


def parse_gold(value: Any, where: str, separator: str | None = None) -> tuple[str, ...]:
    """The gold answers of one row as a tuple of non-empty strings (see the module docstring)."""
    if isinstance(value, np.ndarray):  # Parquet lists
        value = value.tolist()
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            try:
                value = json.loads(text)
            except json.JSONDecodeError:
                value = [text]
        else:
            value = text.split(separator) if separator else [text]
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and math.isnan(value):
            value = []
        else:
            value = [str(int(value)) if float(value).is_integer() else str(value)]
    if not isinstance(value, (list, tuple)):
        raise DataError(f"{where}: the gold answer {value!r} is neither a string nor a list of strings")
    answers = []
    for item in value:
        if not isinstance(item, (str, int, float)) or isinstance(item, bool):
            raise DataError(f"{where}: gold answer {item!r} is not a string")
        if str(item).strip():
            answers.append(str(item).strip())
    if not answers:
        raise DataError(f"{where}: the gold answer list {value!r} is empty; give at least one answer")
    return tuple(answers)


def read_questions(
    path: str | Path,
    *,
    question_column: str | None = None,
    answer_column: str | None = None,
    id_column: str | None = None,
    separator: str | None = None,
    limit: int | None = None,
) -> list[Question]:
    """Read questions and their gold answers from ``path`` (first ``limit`` rows when given)."""
    if limit is not None and limit < 1:
        raise DataError(f"limit must be a whole number >= 1, got {limit!r}")
    from howsure.io.tables import read_table_with_lines  # pandas: kept off `howsure datasets closed-qa`'s start

    frame, lines = read_table_with_lines(path)
    columns = [str(c) for c in frame.columns]
    q_col = _pick(columns, question_column, QUESTION_COLUMNS, "question")
    a_col = _pick(columns, answer_column, ANSWER_COLUMNS, "answer")
    if id_column is not None:
        _pick(columns, id_column, (), "id")
    ids_from = id_column or ("id" if "id" in columns else None)
    if limit is not None:
        frame = frame.iloc[:limit]
    questions: list[Question] = []
    seen: set[str] = set()
    for row, (question, gold) in enumerate(zip(frame[q_col].tolist(), frame[a_col].tolist())):
        where = f"row {row + 1}" + (f" (line {lines[row]})" if lines else "")
        if not isinstance(question, str) or not question.strip():
            raise DataError(f"{where}: the question in column {q_col!r} is {question!r}, not a non-empty text")
        ident = str(frame[ids_from].iloc[row]) if ids_from else str(row)
        if ident in seen:
            raise DataError(f"{where}: id {ident!r} appears twice; ids must be unique")
        seen.add(ident)
        questions.append(Question(ident, question.strip(), parse_gold(gold, f"{where}, column {a_col!r}", separator)))
    if not questions:
        raise DataError(f"{str(path)!r} holds no questions")
    return questions


# ---------------------------------------------------------------------- closed-form questions
CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "England": "London", "Greece": "Athens",
    "Portugal": "Lisbon", "Austria": "Vienna", "Ireland": "Dublin", "Norway": "Oslo",
    "Sweden": "Stockholm", "Poland": "Warsaw", "Canada": "Ottawa", "Australia": "Canberra",
    "Kenya": "Nairobi", "Peru": "Lima", "Cuba": "Havana", "Thailand": "Bangkok",
    "South Korea": "Seoul", "Turkey": "Ankara", "Argentina": "Buenos Aires", "Mexico": "Mexico City",
    "India": "New Delhi", "Brazil": "Brasilia", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Hungary": "Budapest", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "Switzerland": "Bern", "Iran": "Tehran", "Iraq": "Baghdad", "Vietnam": "Hanoi",
    "Chile": "Santiago", "Colombia": "Bogota", "Nigeria": "Abuja",
}
COLOURS = {
    "grass": "green", "the sky on a clear day": "blue", "snow": "white", "coal": "black",
    "a ripe banana": "yellow", "blood": "red", "a ripe tomato": "red", "milk": "white",
    "an orange": "orange", "a lemon": "yellow", "chocolate": "brown", "a crow": "black",
    "the sun in a child's drawing": "yellow", "a fire engine": "red", "an emerald": "green",
    "a sapphire": "blue", "charcoal": "black", "a polar bear's fur": "white",
}
OPPOSITES = {
    "hot": "cold", "big": "small", "up": "down", "fast": "slow", "happy": "sad", "day": "night",
    "open": "closed", "light": "dark", "old": "young", "hard": "soft", "wet": "dry", "full": "empty",
    "early": "late", "rich": "poor", "high": "low", "left": "right", "black": "white",
    "win": "lose", "push": "pull", "in": "out", "yes": "no", "long": "short", "strong": "weak",
    "love": "hate", "start": "end", "true": "false", "top": "bottom", "north": "south",
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                "eighteen")
CLOSED_KINDS = ("capital", "arithmetic", "colour", "opposite")


def _number_gold(value: int) -> tuple[str, ...]:
    return (str(value), NUMBER_WORDS[value]) if 0 <= value < len(NUMBER_WORDS) else (str(value),)


def closed_form_questions(n: int = 400, *, seed: int = 0, kinds: Sequence[str] = CLOSED_KINDS) -> list[Question]:
    """``n`` seeded questions, drawn evenly from ``kinds`` (capital of a country, one-digit
    addition or subtraction, the colour of a thing, the opposite of a word); the same ``seed``
    gives the same questions. Ids are ``<kind>-<number>``. Facts repeat once a kind's table is
    used up (arithmetic has 145 distinct sums and differences)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DataError(f"the number of questions must be a whole number >= 1, got {n!r}")
    unknown = [k for k in kinds if k not in CLOSED_KINDS]
    if unknown or not kinds:
        raise DataError(f"question kind {unknown[0] if unknown else kinds!r} is not one of {', '.join(CLOSED_KINDS)}")
    rng = np.random.default_rng(seed)
    orders = {kind: [] for kind in kinds}
    out: list[Question] = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        number = i // len(kinds)
        if kind == "arithmetic":
            a, b = (int(x) for x in rng.integers(0, 10, size=2))
            if rng.random() < 0.5:
                text, value = f"What is {a} plus {b}?", a + b
            else:
                a, b = max(a, b), min(a, b)
                text, value = f"What is {a} minus {b}?", a - b
            out.append(Question(f"{kind}-{number}", text, _number_gold(value)))
            continue
        table = {"capital": CAPITALS, "colour": COLOURS, "opposite": OPPOSITES}[kind]
        if not orders[kind]:
            orders[kind] = [list(table)[j] for j in rng.permutation(len(table))]
        key = orders[kind].pop()
        if kind == "capital":
            text = f"What is the capital of {key}?"
        elif kind == "colour":
            text = f"What colour is {key}?"
        else:
            text = f"What is the opposite of {key!r}?".replace("'", '"')
        out.append(Question(f"{kind}-{number}", text, (table[key],)))
    return out
