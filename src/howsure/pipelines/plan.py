"""`howsure plan` as one library call: from a labelled pilot set, how many labelled items a
certified threshold needs at each automation rate, and the certified automation share a
calibration set of each size can expect (with the chart of it)."""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from howsure.core.scored import ScoredItems
from howsure.core.validation import check_delta, check_target
from howsure.decisions.planning import labels_needed
from howsure.decisions.simulation import sample_size_curve
from howsure.errors import DataError
from howsure.io.scored import read_scored


@dataclass
class LabelPlan:
    """``needed``: (automation rate, labelled items needed or None when not reachable);
    ``curve``: `howsure.decisions.sample_size_curve` on the pilot items."""

    items: ScoredItems
    needed: list[tuple[float, int | None]]
    curve: dict[str, np.ndarray]


def plan_labels(path: Path, *, target: float = 0.95, delta: float = 0.05, rates: Sequence[float] = (0.1, 0.2, 0.3, 0.5),
                draws: int = 100, seed: int = 0, prob_column: str | None = None, label_column: str | None = None,
                correct_column: str | None = None, prediction_column: str = "prediction") -> LabelPlan:
    """Plan the labelling from the scored, labelled pilot items of ``path``."""
    check_target(target)
    check_delta(delta)
    items = read_scored(path, prob_column=prob_column, label_column=label_column, correct_column=correct_column,
                        prediction_column=prediction_column)
    if items.correct is None:
        raise DataError(f"{path} has neither gold labels nor correctness; give --label-column or --correct-column")
    needed = [(rate, labels_needed(items.correct, items.confidence, target, delta, automation_rate=rate))
              for rate in rates]
    curve = sample_size_curve(items.correct, items.confidence, target, delta, n_draws=draws, seed=seed)
    return LabelPlan(items, needed, curve)


def draw_sample_size_chart(curve: dict[str, np.ndarray], path: Path, *, target: float, delta: float) -> None:
    """Automation share against labelled-set size, with the bootstrap band, as a PNG."""
    import matplotlib  # drawing only: plotting stays off the import path of the commands

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(curve["n_labels"], curve["low_share"], curve["high_share"], alpha=0.25,
                    label="bootstrap 10-90 %")
    ax.plot(curve["n_labels"], curve["median_share"], marker="o", label="bootstrap median")
    ax.plot(curve["n_labels"], curve["planned_share"], linestyle="--", label="plug-in forecast")
    ax.set_xscale("log")
    ax.set_xlabel("labelled calibration items")
    ax.set_ylabel("certified automation share")
    ax.set_title(f"accuracy >= {target:.0%} with probability >= {1 - delta:.0%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
