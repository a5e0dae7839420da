"""Which items a calibrator was fitted on.

A certificate only holds when the calibrator was fitted on other items than the ones that
certify the threshold. So every calibrator fitted by `registry.fit_calibrator` carries ``fit_items``: a fingerprint of
its fitting items (short hashes of their texts, or of their ids when there are no texts), saved
with it in ``calibrator.json`` and in a policy file. `overlap_with_fit_items` counts how many
items of a certification set were among them.

The hashes are the first 16 hex digits of sha256 over ``"text:" + text`` (or ``"id:" + id``):
64 bits, so two different items of sets this size practically never share one. They identify
items without storing them, but a short text can be recovered from its hash by guessing it, so
treat a calibrator file like the data it was fitted on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Sequence
from typing import Any

from howsure.errors import CalibrationError

FINGERPRINT_KEYS = ("text", "id")
HASH_DIGITS = 16


def item_hashes(values: Sequence[Any], key: str) -> list[str]:
    """The short hash of each item's text or id (``key``), in order."""
    if key not in FINGERPRINT_KEYS:
        raise CalibrationError(f"items are fingerprinted by {list(FINGERPRINT_KEYS)}, got {key!r}")
    return [hashlib.sha256(f"{key}:{value}".encode()).hexdigest()[:HASH_DIGITS] for value in values]


def fit_fingerprint(texts: Sequence[str] | None = None, ids: Sequence[Hashable] | None = None) -> dict[str, Any] | None:
    """``{"key": "text" | "id", "n_items": n, "hashes": sorted distinct hashes}`` of the fitting
    items: by text when texts are known (a copy of a text under another id is the same item for
    the guarantee), else by id; None when neither is known."""
    if texts is not None:
        key, values = "text", list(texts)
    elif ids is not None:
        key, values = "id", list(ids)
    else:
        return None
    return {"key": key, "n_items": len(values), "hashes": sorted(set(item_hashes(values, key)))}


def check_fit_fingerprint(data: Any) -> dict[str, Any] | None:
    """Validate a stored ``fit_items`` (None passes) and return it."""
    if data is None:
        return None
    if (not isinstance(data, dict) or data.get("key") not in FINGERPRINT_KEYS
            or not isinstance(data.get("hashes"), list) or not isinstance(data.get("n_items"), int)
            or not all(isinstance(h, str) for h in data["hashes"])):
        raise CalibrationError(
            "saved calibrator has a malformed fit_items; expected {'key': 'text' or 'id', 'n_items': int, "
            "'hashes': [str, ...]}"
        )
    return data


def overlap_with_fit_items(calibrator: Any, texts: Sequence[str] | None = None,
                           ids: Sequence[Hashable] | None = None) -> int | None:
    """How many of the given items the calibrator was fitted on; None when that cannot be told
    (the calibrator has no fingerprint, or the items lack what it was fingerprinted by)."""
    return overlap_with_fingerprint(getattr(calibrator, "fit_items", None), texts=texts, ids=ids)


def overlap_with_fingerprint(fingerprint: dict[str, Any] | None, texts: Sequence[str] | None = None,
                             ids: Sequence[Hashable] | None = None) -> int | None:
    """How many of the given items a fingerprint (`fit_fingerprint`'s form: a calibrator's
    fitting items, or the texts an adapter trained on) holds; None when that cannot be told
    (no fingerprint, or the items lack what it was made of)."""
    if fingerprint is None:
        return None
    values = texts if fingerprint["key"] == "text" else ids
    if values is None:
        return None
    seen = set(fingerprint["hashes"])
    return int(sum(h in seen for h in item_hashes(list(values), fingerprint["key"])))
