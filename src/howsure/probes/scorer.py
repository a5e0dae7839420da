"""Probes on a classification task: fit one from labelled texts, and score texts with it.

`fit_probe` turns hidden states and labels into a `LinearProbe` whose layer is the one with the
best cross-validated AUROC, fitted on every item, and reports the nested cross-fitted estimate of
the whole procedure (`howsure.probes.crossval.nested_crossfit`). `ProbeScorer` is a backend:
``label_scores`` returns the probe's P(label) as each text's label distribution, so a
``howsure score --scorer probe`` output is read by ``evaluate``, ``thresholds`` and the rest as
any other. Two labels: logistic regression on the logit of the second label; more: multinomial.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from howsure.backends.base import ProgressCallback
from howsure.backends.cache import adapter_checksum
from howsure.backends.transformers.adapters import base_model_checksum
from howsure.backends.transformers.hidden import answer_hidden_states
from howsure.calibration.fitting import fit_fingerprint
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.probes.crossval import (
    DEFAULT_C,
    DEFAULT_FOLDS,
    LayerScores,
    NestedCrossfit,
    fit_layer,
    layer_scores,
    nested_crossfit,
)
from howsure.probes.probe import LinearProbe


def model_checksum(backend) -> str:
    """What identifies the weights behind ``backend``'s hidden states: the base model's file
    checksum, and with a merged adapter the adapter's files' checksum too."""
    base = base_model_checksum(backend.model_id)
    adapter = getattr(backend, "adapter", None)
    if adapter is None:
        return base
    return hashlib.sha256(f"{base}\0{adapter_checksum(adapter.directory)}".encode()).hexdigest()


def _finite_or_none(values: Sequence[float]) -> list[float | None]:
    return [float(v) if math.isfinite(v) else None for v in values]


def label_indices(gold: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
    """Gold label names -> indices in ``labels``; `DataError` naming the first unknown one."""
    position = {label: i for i, label in enumerate(labels)}
    for row, value in enumerate(gold):
        if value not in position:
            raise DataError(f"row {row + 1}: label {value!r} is not one of the task's labels {list(labels)}; "
                            "map the file's values with --label-map RAW=LABEL")
    return np.array([position[value] for value in gold], dtype=np.int64)


def fit_probe(
    states: np.ndarray,
    y: np.ndarray,
    labels: Sequence[str],
    *,
    model_id: str,
    checksum: str,
    task: Task | None = None,
    groups: Sequence[Hashable] | None = None,
    texts: Sequence[str] | None = None,
    ids: Sequence[Hashable] | None = None,
    layers: Sequence[int] | None = None,
    n_folds: int = DEFAULT_FOLDS,
    inner_folds: int = 3,
    seed: int = 0,
    C: float = DEFAULT_C,
    nested: bool = True,
) -> tuple[LinearProbe, LayerScores, NestedCrossfit | None]:
    """Cross-validate a probe at each layer, fit the best layer's on every item, and (``nested``)
    estimate the procedure's out-of-fold probabilities.

    Parameters
    ----------
    states : (n, layers, hidden) hidden states
    y : (n,) class indices into ``labels``
    groups : items with equal keys stay in one fold (default: none; pass the texts to keep
        duplicates together)
    texts, ids : fingerprint of the fitting items saved with the probe (by text, else by id)
    layers : candidate hidden-state indices (default: all)
    """
    y = np.asarray(y)
    scores = layer_scores(states, y, n_classes=len(labels), groups=groups, layers=layers, n_folds=n_folds,
                          seed=seed, C=C)
    layer = scores.best_layer
    fit = fit_layer(np.asarray(states)[:, layer], y.astype(np.int64), len(labels), layer, C=C, seed=seed)
    crossfit = None
    if nested:
        crossfit = nested_crossfit(states, y, n_classes=len(labels), groups=groups, layers=layers, n_folds=n_folds,
                                   inner_folds=inner_folds, seed=seed, C=C)
    cv = {
        "layers": scores.layers, "auroc": _finite_or_none(scores.auroc), "chosen_layer": layer,
        "scheme": scores.scheme.to_dict(),
        "nested_auroc": None if crossfit is None else _finite_or_none([crossfit.auroc])[0],
        "nested_layers": None if crossfit is None else crossfit.chosen_layers,
    }
    probe = LinearProbe(fit, list(labels), model_id, checksum, None if task is None else task.name,
                        None if task is None else task.fingerprint(), float(C), fit_fingerprint(texts, ids), cv)
    return probe, scores, crossfit


def fit_task_probe(backend, task: Task, texts: Sequence[str], gold: Sequence[str], *,
                   groups: Sequence[Hashable] | None = None, progress: ProgressCallback | None = None,
                   **options: Any) -> tuple[LinearProbe, LayerScores, NestedCrossfit | None]:
    """`fit_probe` on the answer-position hidden states of ``texts`` under ``task`` (duplicate
    texts kept in one fold unless other ``groups`` are given)."""
    y = label_indices(gold, task.labels)
    states = answer_hidden_states(backend, task, texts, layers=options.get("layers"), progress=progress)
    if options.get("layers") is not None:
        # The states hold the candidate layers only; index them 0..m-1, then name them back.
        wanted = list(options.pop("layers"))
        probe, scores, crossfit = fit_probe(states, y, task.labels, model_id=backend.model_id,
                                            checksum=model_checksum(backend), task=task,
                                            groups=list(texts) if groups is None else groups, texts=texts, **options)
        return _rename_layers(probe, scores, crossfit, wanted)
    return fit_probe(states, y, task.labels, model_id=backend.model_id, checksum=model_checksum(backend), task=task,
                     groups=list(texts) if groups is None else groups, texts=texts, **options)


def _rename_layers(probe, scores, crossfit, wanted):
    probe.fit.layer = wanted[probe.fit.layer]
    scores.layers = [wanted[i] for i in scores.layers]
    probe.cv["layers"] = scores.layers
    probe.cv["chosen_layer"] = probe.fit.layer
    if crossfit is not None:
        crossfit.chosen_layers = [wanted[i] for i in crossfit.chosen_layers]
        probe.cv["nested_layers"] = crossfit.chosen_layers
    return probe, scores, crossfit


class ProbeScorer:
    """A backend whose label distribution is a probe's P(label) on the answer-position hidden
    state of another backend (a `TransformersBackend`).

    ``label_mass`` equals the probabilities and ``other_mass`` is 0: a probe puts no mass off
    the labels. No top tokens are read."""

    def __init__(self, backend, probe: LinearProbe, *, checksum: str | None = None) -> None:
        probe.check_model(backend.model_id, model_checksum(backend) if checksum is None else checksum)
        self.backend = backend
        self.probe = probe
        # Outputs of a probe and of label scoring never resume into each other (score_rows
        # compares the model id).
        self.model_id = f"{backend.model_id} probe@{probe.model_checksum[:12]}:L{probe.layer}"
        self.dtype = getattr(backend, "dtype", None)
        self.adapter = getattr(backend, "adapter", None)

    def label_scores(self, task: Task, texts: Sequence[str], *, top_k: int = 10, details: bool = False,
                     progress: ProgressCallback | None = None) -> list[LabelScores]:
        self.probe.check_task(task)
        states = answer_hidden_states(self.backend, task, texts, layers=[self.probe.layer], progress=progress)
        probabilities = self.probe.predict_proba(states[:, 0])
        return [LabelScores(list(task.labels), p.copy(), p.copy(), 0.0) for p in probabilities]
