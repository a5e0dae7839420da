"""Linear probes on hidden states, cross-validated so that no number comes from an item a probe
was fitted on.

A probe is an L2-regularised logistic regression (scikit-learn's ``LogisticRegression``, lbfgs;
multinomial over the labels when there are more than two) on one layer's hidden state,
standardised with the mean and spread of its fitting items. Three things are computed here:

* `layer_scores`: each layer's cross-validated AUROC (grouped folds, out-of-fold probabilities);
* `choose_layer`: the layer with the best of those, from the items it is given only;
* `nested_crossfit`: out-of-fold probabilities for every item from the whole procedure. Each
  outer fold chooses its layer by `choose_layer` on its own fitting part (inner grouped folds
  inside it) and fits its probe there; the held-out part's items influence neither. That
  is the honest estimate of what a probe chosen and fitted this way does on new items.

Folds come from `howsure.stats.splits.crossfit_folds`: stratified by label, seeded, and
grouped, so items sharing a group (duplicate texts, one question's records) stay on one side.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np
from threadpoolctl import threadpool_limits

from howsure.errors import DataError
from howsure.stats.metrics import auroc
from howsure.stats.splits import SplitScheme, crossfit_folds

DEFAULT_C = 0.05
"""Inverse L2 strength on standardised states: hidden sizes (hundreds) exceed what a few hundred
labelled items pin down, so the weights are kept small."""
DEFAULT_FOLDS = 5
MIN_SCALE = 1e-6  # a feature constant on the fitting items is centred, not divided by ~0


@dataclass
class LayerFit:
    """One fitted probe: standardisation, then a linear map per class (one row for two labels)."""

    layer: int
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (1, d) for two labels: logit of label 1; (K, d) multinomial otherwise
    bias: np.ndarray
    n_classes: int

    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        """(n, K) label probabilities from (n, d) hidden states of this probe's layer."""
        z = (np.asarray(states, dtype=np.float64) - self.mean) / self.scale
        logits = z @ self.weights.T + self.bias
        if self.n_classes == 2:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.column_stack([1.0 - p1, p1])
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


def fit_layer(states: np.ndarray, y: np.ndarray, n_classes: int, layer: int, *, C: float = DEFAULT_C,
              seed: int = 0) -> LayerFit:
    """Fit one probe on (n, d) states and class indices ``y`` in 0..n_classes-1."""
    from sklearn.linear_model import LogisticRegression

    states = np.asarray(states, dtype=np.float64)
    present = np.unique(y)
    if present.size < 2:
        raise DataError(f"a probe needs items of at least two labels to fit; these {y.size} items all have label {present[0]}")
    mean = states.mean(axis=0)
    scale = np.maximum(states.std(axis=0), MIN_SCALE)
    model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
    # One BLAS thread: these problems are small (a few hundred items by the hidden size), and
    # threads cost more than they give; on a shared 2-core machine one fit ran 8x faster so.
    with threadpool_limits(1, user_api="blas"):
        model.fit((states - mean) / scale, y)
    if n_classes == 2:
        weights, bias = model.coef_.reshape(1, -1), model.intercept_.reshape(1)
    else:
        # A fitting part may lack a rare label: its logit stays at -inf-like (no mass).
        weights = np.zeros((n_classes, states.shape[1]))
        bias = np.full(n_classes, -1e9)
        weights[model.classes_] = model.coef_
        bias[model.classes_] = model.intercept_
    return LayerFit(int(layer), mean, scale, weights, bias, int(n_classes))


def probe_auroc(y: np.ndarray, probabilities: np.ndarray) -> float:
    """AUROC of the probe's P(label 1) against the labels (two labels), or the mean one-vs-rest
    AUROC over the labels present (more)."""
    if probabilities.shape[1] == 2:
        return auroc(y == 1, probabilities[:, 1])
    values = [auroc(y == k, probabilities[:, k]) for k in range(probabilities.shape[1]) if 0 < (y == k).sum() < y.size]
    return float(np.mean(values)) if values else float("nan")


def _check(states: np.ndarray, y: np.ndarray, groups: Sequence[Hashable] | None) -> tuple[np.ndarray, np.ndarray]:
    states = np.asarray(states)
    y = np.asarray(y)
    if states.ndim != 3:
        raise DataError(f"hidden states must have shape (items, layers, hidden), got {states.shape}")
    if y.ndim != 1 or y.size != states.shape[0]:
        raise DataError(f"{y.size} labels for {states.shape[0]} items of hidden states")
    if y.dtype.kind not in "iub" or (y.size and y.min() < 0):
        raise DataError(f"labels must be class indices 0..K-1, got dtype {y.dtype}")
    if groups is not None and len(groups) != y.size:
        raise DataError(f"{len(groups)} groups for {y.size} items")
    if not np.isfinite(states).all():
        raise DataError("hidden states hold NaN or infinite values")
    return states, y.astype(np.int64)


def _subset(groups: Sequence[Hashable] | None, index: np.ndarray) -> list[Hashable] | None:
    return None if groups is None else [groups[i] for i in index]


@dataclass
class LayerScores:
    """Each candidate layer's cross-validated AUROC and its out-of-fold probabilities."""

    layers: list[int]
    auroc: list[float]
    oof: np.ndarray  # (n_layers, n, K)
    scheme: SplitScheme

    @property
    def best_layer(self) -> int:
        values = np.nan_to_num(np.asarray(self.auroc, dtype=np.float64), nan=-1.0)
        return self.layers[int(np.argmax(values))]  # the lowest layer on ties


def layer_scores(states: np.ndarray, y: np.ndarray, *, n_classes: int | None = None,
                 groups: Sequence[Hashable] | None = None, layers: Sequence[int] | None = None,
                 n_folds: int = DEFAULT_FOLDS, seed: int = 0, C: float = DEFAULT_C) -> LayerScores:
    """Cross-validated AUROC of a probe at each layer: every item's probability comes from a
    probe fitted on the other folds (grouped, stratified, seeded)."""
    states, y = _check(states, y, groups)
    n_classes = int(n_classes or y.max() + 1)
    candidates = list(range(states.shape[1])) if layers is None else [int(layer) for layer in layers]
    folds, scheme = crossfit_folds(y, n_folds=n_folds, seed=seed, groups=groups)
    oof = np.full((len(candidates), y.size, n_classes), np.nan)
    for fit_idx, held_out in folds:
        for slot, layer in enumerate(candidates):
            probe = fit_layer(states[fit_idx, layer], y[fit_idx], n_classes, layer, C=C, seed=seed)
            oof[slot, held_out] = probe.predict_proba(states[held_out, layer])
    return LayerScores(candidates, [probe_auroc(y, oof[slot]) for slot in range(len(candidates))], oof, scheme)


def choose_layer(states: np.ndarray, y: np.ndarray, *, n_classes: int, groups: Sequence[Hashable] | None,
                 layers: Sequence[int] | None, n_folds: int, seed: int, C: float) -> int:
    """The layer whose cross-validated AUROC on these items (and these only) is best."""
    return layer_scores(states, y, n_classes=n_classes, groups=groups, layers=layers, n_folds=n_folds,
                        seed=seed, C=C).best_layer


@dataclass
class NestedCrossfit:
    """Out-of-fold probabilities of the whole choose-a-layer-then-fit procedure."""

    probabilities: np.ndarray  # (n, K)
    chosen_layers: list[int]  # per outer fold
    folds: list[tuple[np.ndarray, np.ndarray]]
    scheme: SplitScheme
    auroc: float = field(default=float("nan"))


def nested_crossfit(states: np.ndarray, y: np.ndarray, *, n_classes: int | None = None,
                    groups: Sequence[Hashable] | None = None, layers: Sequence[int] | None = None,
                    n_folds: int = DEFAULT_FOLDS, inner_folds: int = 3, seed: int = 0,
                    C: float = DEFAULT_C) -> NestedCrossfit:
    """Every item's probability from a probe whose layer was chosen and whose weights were fitted
    on the other outer folds alone (see the module docstring)."""
    states, y = _check(states, y, groups)
    n_classes = int(n_classes or y.max() + 1)
    folds, scheme = crossfit_folds(y, n_folds=n_folds, seed=seed, groups=groups)
    probabilities = np.full((y.size, n_classes), np.nan)
    chosen = []
    for fit_idx, held_out in folds:
        layer = choose_layer(states[fit_idx], y[fit_idx], n_classes=n_classes, groups=_subset(groups, fit_idx),
                             layers=layers, n_folds=inner_folds, seed=seed, C=C)
        probe = fit_layer(states[fit_idx, layer], y[fit_idx], n_classes, layer, C=C, seed=seed)
        probabilities[held_out] = probe.predict_proba(states[held_out, layer])
        chosen.append(layer)
    return NestedCrossfit(probabilities, chosen, [(a.copy(), b.copy()) for a, b in folds], scheme,
                          probe_auroc(y, probabilities))
