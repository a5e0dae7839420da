"""The split guard of fine-tuned scores: items a LoRA adapter trained on (its training and
validation texts, `trained_hashes`) may not calibrate, certify or be reported on with its scores.

``howsure thresholds``, ``evaluate`` and ``compare`` call `check_adapter_overlap` with the scored
file and the ``--adapter`` given, if any: the adapter is the one the file's meta (written by
``howsure score --adapter``) names, or the flag's. Overlap is a `DataError` naming how many items
and the adapter, unless ``allow_overlap``; then the returned statement's ``words`` say so, and
the policy and reports carry them. Texts are matched as calibrator fingerprints match them
(`howsure.calibration.fitting.overlap_with_fingerprint`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from howsure.backends.cache import adapter_checksum
from howsure.calibration.fitting import overlap_with_fingerprint
from howsure.errors import DataError
from howsure.pipelines.score_job import meta_path

AGAIN = ("use items the adapter never saw, or pass --allow-overlap to go on anyway (the report and the "
         "policy then say the guarantee does not hold)")


def recorded_adapter(path: str | Path) -> dict[str, Any] | None:
    """The adapter (``{"directory", "checksum"}``) the meta file beside ``path`` says its scores
    came from; None when there is no meta file or it names no adapter."""
    meta = meta_path(Path(path))
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {str(meta)!r}, the record of how {str(path)!r} was scored: {exc}") from exc
    adapter = data.get("adapter") if isinstance(data, dict) else None
    if adapter is not None and not (isinstance(adapter, dict) and isinstance(adapter.get("directory"), str)):
        raise DataError(f"{str(meta)!r} has a malformed adapter entry {adapter!r}; expected "
                        "{'directory': str, 'checksum': str}")
    return adapter


def check_adapter_overlap(path: str | Path, texts: Sequence[str] | None, *, adapter: str | Path | None = None,
                          allow_overlap: bool = False) -> dict[str, Any] | None:
    """Refuse items of the scored file ``path`` (with these ``texts``) that the adapter trained on.

    The adapter is ``adapter`` or else the one ``path``'s meta names; None (nothing to check)
    when there is neither. Returns the statement a policy stores as
    ``guarantee.adapter_overlap`` and a report shows: the adapter's directory and checksum,
    whether it could be checked, how many of how many items overlapped, whether that was
    allowed, and ``words`` saying it in a sentence.

    Raises
    ------
    DataError
        Items overlap (or the items have no texts to check) and not ``allow_overlap``; the
        recorded adapter is gone; ``adapter`` is not the adapter the meta names.
    """
    recorded = recorded_adapter(path)
    if adapter is None and recorded is None:
        return None
    directory = Path(adapter if adapter is not None else recorded["directory"])
    if adapter is None and not directory.is_dir():
        raise DataError(f"{str(path)!r} was scored with adapter {str(directory)!r}, which is not there any more; "
                        "pass --adapter DIR where it is now, so the items it trained on can be kept out")
    checksum = adapter_checksum(directory)
    if recorded is not None and recorded.get("checksum") != checksum:
        raise DataError(
            f"{str(path)!r} was scored with adapter {recorded['directory']!r} (checksum "
            f"{str(recorded.get('checksum'))[7:23]}), but --adapter {str(directory)!r} is another one (checksum "
            f"{checksum[7:23]}); pass the adapter the scores came from"
        )
    # The adapter module loads torch: only when an adapter is in play, so the decision CLI starts fast.
    from howsure.backends.transformers.adapters import trained_hashes

    hashes = trained_hashes(directory)
    fingerprint = {"key": "text", "n_items": len(hashes), "hashes": sorted(hashes)}
    n_overlap = overlap_with_fingerprint(fingerprint, texts=texts)
    n_items = None if texts is None else len(texts)
    shown = str(directory)
    if not allow_overlap:
        if n_overlap is None:
            raise DataError(f"{str(path)!r} has no text column, so howsure cannot check that none of its items "
                            f"were in the training data of adapter {shown!r}; give the texts, or pass "
                            "--allow-overlap to go on anyway (the report and the policy then say so)")
        if n_overlap:
            raise DataError(
                f"{n_overlap} of the {n_items} items of {str(path)!r} were in the training data of adapter "
                f"{shown!r} (its {len(hashes)} training and validation texts), so calibrating, certifying or "
                f"reporting on them is not honest; {AGAIN}"
            )
    if n_overlap is None:
        words = (f"The items have no texts, so it is unknown whether any were in the training data of adapter "
                 f"{shown!r} (--allow-overlap): the guarantee may not hold.")
    elif n_overlap:
        words = (f"{n_overlap} of {n_items} items were in the training data of adapter {shown!r} "
                 "(--allow-overlap): the guarantee does not hold.")
    else:
        words = f"None of the {n_items} items were in the training data of adapter {shown!r}."
    return {"directory": str(directory.resolve()), "checksum": checksum, "checked": n_overlap is not None,
            "by": "text", "n_items": n_items, "n_overlap": n_overlap, "n_trained": len(hashes),
            "allowed": bool(allow_overlap), "words": words}


__all__ = ["check_adapter_overlap", "recorded_adapter"]
