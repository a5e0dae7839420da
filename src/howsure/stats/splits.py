"""Honest evaluation by construction: every number comes from items the calibrator never saw.

Two schemes, both stratified by the label, seeded, and group-aware (pass the texts as
``groups`` so that exact duplicate texts always land on the same side):

* :func:`calibration_test_split` -- one calibration part and one test part;
* :func:`crossfit_folds` -- k-fold cross-fitting folds; `howsure.calibration.crossfit_predict`
  fits a calibrator on the other folds so every item gets exactly one out-of-fold prediction.

Each returns (or exposes) a :class:`SplitScheme` whose :meth:`~SplitScheme.describe` sentence a
report prints next to its numbers. There is deliberately no helper that fits and scores on the
same items: that gives isotonic regression an ECE of about 1e-17 and measures nothing.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold, train_test_split

from howsure.core.validation import check_split_labels
from howsure.errors import CalibrationError


@dataclass(frozen=True)
class SplitScheme:
    """How evaluation items were kept apart from fitting items; for reports.

    Attributes
    ----------
    kind : {"calibration/test split", "cross-fitting"}
    seed : int
    n_items : int
    n_groups : int
        Distinct groups (equal to ``n_items`` when no groups were given).
    grouped : bool
        Whether items sharing a group were kept on one side.
    stratified : bool
        Always True: both schemes preserve the label proportions.
    test_size : float or None
        Fraction of groups held out (split only).
    n_folds : int or None
        Number of folds (cross-fitting only).
    """

    kind: str
    seed: int
    n_items: int
    n_groups: int
    grouped: bool
    stratified: bool = True
    test_size: float | None = None
    n_folds: int | None = None

    def describe(self) -> str:
        """One sentence for a report, e.g. '5-fold cross-fitting (out-of-fold predictions), ...'."""
        if self.kind == "cross-fitting":
            head = f"{self.n_folds}-fold cross-fitting (each item scored by a calibrator fitted on the other folds)"
        else:
            head = f"calibration/test split holding out {self.test_size:.0%} for testing"
        grouping = (
            f"{self.n_items} items in {self.n_groups} groups, duplicates kept on one side"
            if self.grouped
            else f"{self.n_items} items, no grouping"
        )
        return f"{head}; stratified by label, seed {self.seed}; {grouping}"

    def to_dict(self) -> dict[str, Any]:
        """The scheme as a JSON-able dict, with the :meth:`describe` sentence under 'description'."""
        return {**asdict(self), "description": self.describe()}


@dataclass(frozen=True)
class CalibrationTestSplit:
    """Indices of the two parts plus the scheme; unpacks as ``cal_idx, test_idx = split``."""

    cal_idx: np.ndarray
    test_idx: np.ndarray
    scheme: SplitScheme

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter((self.cal_idx, self.test_idx))


def _group_ids(groups: Sequence[Hashable] | None, n_items: int) -> tuple[np.ndarray, bool]:
    """Map arbitrary hashable group keys (e.g. texts) to ints 0..G-1 in order of appearance."""
    if groups is None:
        return np.arange(n_items), False
    keys = list(groups)
    if len(keys) != n_items:
        raise CalibrationError(f"mismatched lengths: y has {n_items} items but groups has {len(keys)}")
    ids: dict[Hashable, int] = {}
    try:
        codes = np.fromiter((ids.setdefault(key, len(ids)) for key in keys), dtype=np.int64, count=n_items)
    except TypeError as exc:
        raise CalibrationError(f"groups must be hashable (e.g. the item texts): {exc}") from exc
    return codes, True


def _group_labels(labels: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """Each group's most common label (smallest on ties), used to stratify whole groups."""
    n_groups = int(group_ids.max()) + 1
    per_group: list[Counter] = [Counter() for _ in range(n_groups)]
    for group, label in zip(group_ids.tolist(), labels.tolist()):
        per_group[group][label] += 1
    return np.array([min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for c in per_group])


def _check_per_class(units: np.ndarray, needed: int, unit_name: str, purpose: str) -> None:
    values, counts = np.unique(units, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < needed:
        raise CalibrationError(
            f"label {values.tolist()[smallest]!r} has only {counts[smallest]} {unit_name}; "
            f"{purpose} needs at least {needed} per label"
        )


def calibration_test_split(
    y: Any,
    *,
    test_size: float = 0.5,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> CalibrationTestSplit:
    """Split items into a calibration part and a test part, stratified and group-aware.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels to stratify by (class indices, or correctness in confidence mode).
    test_size : float
        Fraction of groups (of items, without groups) put in the test part, in (0, 1).
    seed : int
        Seed of the shuffle; the same seed gives the same split.
    groups : sequence of hashables of shape (n,), optional
        Items with equal keys stay together. Pass the texts to keep exact duplicates together.

    Returns
    -------
    CalibrationTestSplit
        ``cal_idx`` and ``test_idx``: sorted int arrays that partition ``range(n)``;
        ``scheme``: the :class:`SplitScheme` to state in a report.
    """
    labels = check_split_labels(y)
    if not (isinstance(test_size, (int, float)) and 0.0 < float(test_size) < 1.0):
        raise CalibrationError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    group_ids, grouped = _group_ids(groups, labels.size)
    group_labels = _group_labels(labels, group_ids) if grouped else labels
    _check_per_class(group_labels, 2, "groups" if grouped else "items", "a stratified calibration/test split")
    try:
        cal_groups, test_groups = train_test_split(
            np.arange(group_labels.size), test_size=float(test_size), stratify=group_labels, random_state=seed
        )
    except ValueError as exc:
        raise CalibrationError(
            f"cannot split {group_labels.size} groups with test_size={test_size}: {exc}"
        ) from exc
    in_test = np.isin(group_ids, test_groups)
    scheme = SplitScheme(
        kind="calibration/test split",
        seed=seed,
        n_items=int(labels.size),
        n_groups=int(group_labels.size),
        grouped=grouped,
        test_size=float(test_size),
    )
    return CalibrationTestSplit(np.flatnonzero(~in_test), np.flatnonzero(in_test), scheme)


def crossfit_folds(
    y: Any,
    *,
    n_folds: int = 5,
    seed: int = 0,
    groups: Sequence[Hashable] | None = None,
) -> tuple[list[tuple[np.ndarray, np.ndarray]], SplitScheme]:
    """Stratified, seeded, group-aware k folds.

    Parameters
    ----------
    y : array-like of shape (n,)
    n_folds : int
        k >= 2. Every label needs at least k items (k groups when grouped), so that each
        fold's fitting part sees every label.
    seed : int
    groups : sequence of hashables of shape (n,), optional

    Returns
    -------
    folds : list of (fit_idx, held_out_idx)
        k pairs of int arrays; the held-out parts partition ``range(n)``.
    scheme : SplitScheme
    """
    labels = check_split_labels(y)
    if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
        raise CalibrationError(f"n_folds must be an integer >= 2, got {n_folds!r}")
    n_folds = int(n_folds)
    if labels.size < n_folds:
        raise CalibrationError(f"{labels.size} items are fewer than n_folds={n_folds}")
    group_ids, grouped = _group_ids(groups, labels.size)
    group_labels = _group_labels(labels, group_ids) if grouped else labels
    if group_labels.size < n_folds:
        raise CalibrationError(f"{group_labels.size} distinct groups are fewer than n_folds={n_folds}")
    _check_per_class(group_labels, n_folds, "groups" if grouped else "items", f"{n_folds}-fold cross-fitting")
    # The cache is keyed on the labels' integer codes: sklearn folds codes exactly as it folds
    # the labels, and codes have bytes even where the labels are objects (strings, a Series).
    label_codes = np.unique(labels, return_inverse=True)[1].reshape(-1)
    folds = list(_stratified_folds(_array_key(label_codes), _array_key(group_ids) if grouped else None, n_folds,
                                   seed))
    all_labels = np.unique(labels)
    for fit_idx, _ in folds:
        missing = np.setdiff1d(all_labels, labels[fit_idx])
        if missing.size:
            # Possible only with large mixed-label groups; a fold that never sees a label
            # cannot calibrate it.
            raise CalibrationError(
                f"a fold's fitting part has no item with label {missing.tolist()[0]!r}; "
                f"use fewer folds than n_folds={n_folds} or smaller groups"
            )
    scheme = SplitScheme(
        kind="cross-fitting",
        seed=seed,
        n_items=int(labels.size),
        n_groups=int(group_labels.size),
        grouped=grouped,
        n_folds=n_folds,
    )
    return folds, scheme


def _array_key(values: np.ndarray) -> tuple[str, bytes]:
    return values.dtype.str, values.tobytes()


@functools.lru_cache(maxsize=32)
def _stratified_folds(labels_key: tuple[str, bytes], groups_key: tuple[str, bytes] | None, n_folds: int,
                      seed: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """sklearn's seeded (group-)stratified k folds of these labels (and groups), read-only.

    Cached: cross-fitting asks for the same folds once per candidate calibrator (auto tries six,
    inside every outer fold too), and StratifiedGroupKFold costs seconds on a few thousand
    groups, most of the demo's calibration time before this cache."""
    labels = np.frombuffer(labels_key[1], dtype=labels_key[0])
    placeholder = np.zeros(labels.size)
    if groups_key is not None:
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        folds = splitter.split(placeholder, labels, np.frombuffer(groups_key[1], dtype=groups_key[0]))
    else:
        folds = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(placeholder, labels)
    out = []
    for fit_idx, held_out_idx in folds:
        fit_idx.setflags(write=False)  # shared by every caller of the cache
        held_out_idx.setflags(write=False)
        out.append((fit_idx, held_out_idx))
    return tuple(out)
