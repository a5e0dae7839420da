"""A fitted linear probe as a JSON file: what it reads, what it was fitted on, and its weights.

File layout (``format = "howsure.probe"``, never a pickle)::

    format, version
    model        {id, checksum}          the model whose hidden states it reads
    task         {name, fingerprint}     or null for free-form answers (QA correctness)
    labels       [label, ...]            the probe's P(label) columns, in the task's order
    layer        int                     hidden-state index (0 = embeddings)
    mean, scale  [float] * hidden        standardisation of its fitting items
    weights      [[float] * hidden]      one row (logit of labels[1]) or one per label
    bias         [float]
    C            float
    training     {key, n_items, hashes}  `howsure.calibration.fitting.fit_fingerprint`
    cv           {layers, auroc, chosen_layer, nested_auroc, nested_layers, scheme}

`load_probe` checks the format, and `LinearProbe.check_model` / `check_task` refuse a probe on
another model or task: its weights mean nothing on another model's hidden states.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from howsure.errors import DataError, ModelError, TaskError
from howsure.probes.crossval import LayerFit

PROBE_FORMAT = "howsure.probe"
PROBE_VERSION = 1


@dataclass
class LinearProbe:
    """A probe fitted on one layer's hidden states, with what identifies its inputs."""

    fit: LayerFit
    labels: list[str]
    model_id: str
    model_checksum: str
    task_name: str | None
    task_fingerprint: str | None
    C: float
    training: dict[str, Any] | None = None
    cv: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> int:
        return self.fit.layer

    def predict_proba(self, states: np.ndarray) -> np.ndarray:
        """(n, K) P(label) from (n, d) states of `layer`, or (n, layers, d) states of every layer."""
        states = np.asarray(states)
        if states.ndim == 3:
            states = states[:, self.layer]
        if states.ndim != 2 or states.shape[1] != self.fit.mean.size:
            raise DataError(f"the probe reads hidden states of size {self.fit.mean.size}, got shape {states.shape}")
        return self.fit.predict_proba(states)

    def check_model(self, model_id: str, checksum: str) -> None:
        """Raise `ModelError` unless ``checksum`` is the checksum of the model it was fitted on."""
        if checksum != self.model_checksum:
            raise ModelError(
                f"the probe was fitted on the hidden states of model {self.model_id!r} (checksum "
                f"{self.model_checksum[:16]}), not of {model_id!r} (checksum {checksum[:16]}); "
                "fit a probe on this model with `howsure probe fit`"
            )

    def check_task(self, task) -> None:
        """Raise `TaskError` unless ``task`` (name and prompt fingerprint) is the one it was fitted on."""
        if self.task_fingerprint is None:
            raise TaskError(f"the probe was fitted on free-form answers, not on a classification task like {task.name!r}")
        if task.fingerprint() != self.task_fingerprint or list(task.labels) != self.labels:
            raise TaskError(
                f"the probe was fitted for task {self.task_name!r} (fingerprint {self.task_fingerprint}, "
                f"labels {self.labels}), not for task {task.name!r} (fingerprint {task.fingerprint()}, "
                f"labels {list(task.labels)}): another prompt gives other hidden states"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PROBE_FORMAT, "version": PROBE_VERSION,
            "model": {"id": self.model_id, "checksum": self.model_checksum},
            "task": None if self.task_fingerprint is None else {"name": self.task_name, "fingerprint": self.task_fingerprint},
            "labels": list(self.labels),
            "layer": self.fit.layer,
            "mean": self.fit.mean.tolist(), "scale": self.fit.scale.tolist(),
            "weights": self.fit.weights.tolist(), "bias": self.fit.bias.tolist(),
            "C": self.C, "training": self.training, "cv": self.cv,
        }

    @classmethod
    def from_dict(cls, data: Any, source: str = "probe") -> "LinearProbe":
        if not isinstance(data, dict) or data.get("format") != PROBE_FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise DataError(f"{source} is not a howsure probe (format {found!r}, expected {PROBE_FORMAT!r}); "
                            "write one with `howsure probe fit`")
        if data.get("version") != PROBE_VERSION:
            raise DataError(f"{source} has probe version {data.get('version')!r}; this howsure reads {PROBE_VERSION}")
        try:
            labels = [str(label) for label in data["labels"]]
            mean = np.asarray(data["mean"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            weights = np.asarray(data["weights"], dtype=np.float64)
            bias = np.asarray(data["bias"], dtype=np.float64)
            fit = LayerFit(int(data["layer"]), mean, scale, weights, bias, len(labels))
            model, task = data["model"], data["task"]
            probe = cls(fit, labels, str(model["id"]), str(model["checksum"]),
                        None if task is None else str(task["name"]), None if task is None else str(task["fingerprint"]),
                        float(data["C"]), data.get("training"), data.get("cv") or {})
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{source} is a malformed probe file ({type(exc).__name__}: {exc})") from None
        rows = 1 if len(labels) == 2 else len(labels)
        d = mean.size
        if len(labels) < 2 or weights.shape != (rows, d) or bias.shape != (rows,) or scale.shape != (d,) or (scale <= 0).any():
            raise DataError(f"{source} is a malformed probe file: {len(labels)} labels need weights of shape "
                            f"({rows}, {d}), bias ({rows},) and positive scales; got {weights.shape}, {bias.shape}")
        return probe


def save_probe(probe: LinearProbe, path: str | Path) -> Path:
    """Write the probe as JSON and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(probe.to_dict(), allow_nan=False) + "\n", "utf-8")
    return path


def load_probe(path: str | Path) -> LinearProbe:
    """Read a probe file written by `save_probe` (JSON only: nothing is unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"probe file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"probe file {str(path)!r} is not JSON: {exc}") from None
    return LinearProbe.from_dict(data, repr(str(path)))
