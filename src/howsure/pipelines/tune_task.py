"""Choose a prompt, verbalizers and variant rule on a labelled dev split.

`rank_candidates` scores every candidate task on the same dev texts and ranks them by AUROC
(how well the raw scores separate the classes: what calibration cannot fix) and then log loss.
AUROC differences smaller than its standard error are noise, so candidates within one standard
error of the best AUROC count as tied and are ordered among themselves by log loss (how good
the raw probabilities already are); the rest follow by AUROC. It sees only the texts it is
given: pass a dev split, never the test split.

A candidates file is TOML: a ``[base]`` table with the fields every candidate shares, and one
``[[candidate]]`` table per candidate with the fields it changes. ``variant_rules`` at the top
level tries every candidate under each rule::

    variant_rules = ["variants", "exact"]
    [base]
    labels = { positive = ["positive"], negative = ["negative"] }
    [[candidate]]
    name = "one-word"
    instruction = "Positive or negative? Answer with one word.\\n\\n{text}"
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from howsure.backends.base import Backend
from howsure.core.task import Task, load_task
from howsure.errors import DataError, TaskError


@dataclass
class CandidateResult:
    task: Task
    n: int
    accuracy: float
    auroc: float
    auroc_se: float
    log_loss: float
    mean_label_mass: float

    def row(self) -> dict:
        return {
            "name": self.task.name,
            "variant_rule": self.task.variant_rule,
            "n": self.n,
            "auroc": round(self.auroc, 4),
            "auroc_se": round(self.auroc_se, 4),
            "log_loss": round(self.log_loss, 4),
            "accuracy": round(self.accuracy, 4),
            "mean_label_mass": round(self.mean_label_mass, 4),
        }


def load_candidates(path: str | Path) -> list[Task]:
    """Candidate tasks from a candidates TOML file (see module docstring)."""
    try:
        data = tomllib.loads(Path(path).read_text("utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskError(f"cannot read candidates file {str(path)!r}: {exc}") from exc
    base = data.get("base", {})
    entries = data.get("candidate", [])
    if not entries:
        raise TaskError(f"{path}: no [[candidate]] tables found")
    rules = data.get("variant_rules", [None])
    tasks = []
    for number, entry in enumerate(entries, 1):
        for rule in rules:
            fields = {**base, **entry}
            fields.setdefault("name", f"candidate-{number}")
            if rule is not None:
                fields["variant_rule"] = rule
                fields["name"] = f"{fields['name']}"
            try:
                tasks.append(load_task(fields))
            except TaskError as exc:
                raise TaskError(f"{path}: candidate {fields['name']!r}: {exc}") from exc
    return tasks


def rank_candidates(
    backend: Backend,
    tasks: Sequence[Task],
    texts: Sequence[str],
    gold: Sequence[str],
    *,
    progress: Callable[[int], None] | None = None,
) -> list[CandidateResult]:
    """Score each candidate on ``texts`` and rank by AUROC (desc), then log loss (asc).

    AUROC is one-vs-rest macro over labels for more than two labels."""
    from sklearn.metrics import log_loss, roc_auc_score

    labels = tasks[0].label_names
    for task in tasks:
        if task.label_names != labels:
            raise TaskError(f"candidate {task.name!r} has labels {task.label_names}, expected {labels}")
    unknown = sorted(set(gold) - set(labels))
    if unknown:
        raise DataError(f"gold label {unknown[0]!r} is not one of the task's labels {labels}")
    y = np.array([labels.index(g) for g in gold])
    if len(set(y.tolist())) < 2:
        raise DataError("the dev split needs at least two classes to rank candidates")
    results = []
    for task in tasks:
        scores = backend.label_scores(task, texts, top_k=1, progress=progress)
        probs = np.clip(np.stack([s.probabilities for s in scores]), 1e-12, 1.0)
        probs /= probs.sum(1, keepdims=True)
        if len(labels) == 2:
            auroc = roc_auc_score(y, probs[:, 1])
        else:
            auroc = roc_auc_score(y, probs, multi_class="ovr", labels=list(range(len(labels))))
        results.append(
            CandidateResult(
                task=task,
                n=len(texts),
                accuracy=float((probs.argmax(1) == y).mean()),
                auroc=float(auroc),
                auroc_se=auroc_standard_error(float(auroc), y, len(labels)),
                log_loss=float(log_loss(y, probs, labels=list(range(len(labels))))),
                mean_label_mass=float(np.mean([s.label_mass.sum() for s in scores])),
            )
        )
    best = max(results, key=lambda r: r.auroc)
    tied = sorted((r for r in results if r.auroc >= best.auroc - best.auroc_se), key=lambda r: r.log_loss)
    rest = sorted((r for r in results if r.auroc < best.auroc - best.auroc_se), key=lambda r: (-r.auroc, r.log_loss))
    return tied + rest


def auroc_standard_error(auroc: float, y: np.ndarray, n_labels: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC; for more than two labels, that of the
    smallest one-vs-rest split (a conservative stand-in for the macro average)."""
    counts = np.bincount(y, minlength=n_labels)
    pairs = [(c, len(y) - c) for c in counts] if n_labels > 2 else [(counts[1], counts[0])]
    positives, negatives = min(pairs, key=lambda p: min(p))
    q1, q2 = auroc / (2 - auroc), 2 * auroc**2 / (1 + auroc)
    variance = (auroc * (1 - auroc) + (positives - 1) * (q1 - auroc**2) + (negatives - 1) * (q2 - auroc**2)) / (
        positives * negatives
    )
    return float(np.sqrt(max(variance, 0.0)))
