"""Splits by content hash: each text's side follows from the text alone.

A text goes to a side by the first 16 hex digits of ``sha256(salt + "text:" + text)`` read as a
fraction in [0, 1) and compared with the cumulative side fractions. So exact duplicates always
land on one side, adding or removing other items never moves a text, and the split needs no
seed beyond the optional ``salt`` (the same text hashes as howsure's calibrator fingerprints,
`howsure.calibration.fitting.item_hashes`, when the salt is empty).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence

from howsure.errors import DataError

HASH_DIGITS = 16
DEFAULT_FRACTIONS = {"train": 0.6, "calibration": 0.2, "test": 0.2}


def text_hash(text: str, salt: str = "") -> str:
    """The short content hash of a text: 16 hex digits of sha256 over ``salt + "text:" + text``."""
    return hashlib.sha256(f"{salt}text:{text}".encode()).hexdigest()[:HASH_DIGITS]


def check_fractions(fractions: Mapping[str, float]) -> dict[str, float]:
    """Side name -> fraction, each in [0, 1], summing to 1 (within 1e-9); raises DataError."""
    if not fractions:
        raise DataError("split fractions are empty; expected e.g. train=0.6,calibration=0.2,test=0.2")
    checked = {}
    for name, value in fractions.items():
        if not isinstance(name, str) or not name:
            raise DataError(f"split side name {name!r} is not a non-empty string")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise DataError(f"split fraction of {name!r} is {value!r}; expected a number in [0, 1]")
        checked[name] = float(value)
    total = math.fsum(checked.values())
    if abs(total - 1.0) > 1e-9:
        listed = ", ".join(f"{k}={v:g}" for k, v in checked.items())
        raise DataError(f"split fractions {listed} sum to {total:g}; expected 1")
    return checked


def parse_fractions(text: str) -> dict[str, float]:
    """'train=0.6,calibration=0.2,test=0.2' -> {'train': 0.6, ...}, checked."""
    fractions: dict[str, float] = {}
    for pair in text.split(","):
        name, sep, value = (part.strip() for part in pair.partition("="))
        if not sep or not name:
            raise DataError(f"split entry {pair!r} is not SIDE=FRACTION; expected e.g. train=0.6,calibration=0.2,test=0.2")
        try:
            fractions[name] = float(value)
        except ValueError:
            raise DataError(f"split fraction of {name!r} is {value!r}; expected a number in [0, 1]") from None
    return check_fractions(fractions)


def hash_sides(texts: Sequence[str], fractions: Mapping[str, float] | None = None, *, salt: str = "") -> list[str]:
    """The side of each text, in order (see the module docstring).

    Parameters
    ----------
    texts : sequence of str
    fractions : mapping of side name -> fraction, optional
        In the order the sides take the unit interval; default `DEFAULT_FRACTIONS`.
    salt : str
        Another salt gives another, equally content-determined, split.
    """
    fractions = check_fractions(DEFAULT_FRACTIONS if fractions is None else fractions)
    names = list(fractions)
    edges = []
    running = 0.0
    for name in names:
        running += fractions[name]
        edges.append(running)
    edges[-1] = 1.0  # rounding must not leave the top of the interval on no side
    scale = float(16 ** HASH_DIGITS)
    sides = []
    for text in texts:
        position = int(text_hash(text, salt), 16) / scale
        sides.append(next(name for name, edge in zip(names, edges) if position < edge))
    return sides
