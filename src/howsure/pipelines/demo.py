"""The one-command demo: the whole loop on the bundled sample with the bundled model.

score (resumable) -> honest calibration by cross-fitting -> metrics with intervals and the HTML
report -> a calibrator fitted on one half and a threshold certified on the other half -> a
policy file. Every number it prints comes from items the calibrator was not fitted on.

Each stage's wall-clock seconds (load, scoring, calibration, report, certification and the
total) are printed by `howsure demo` and kept in summary.json under ``stage_seconds``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from howsure.backends import load_backend
from howsure.core.task import load_task
from howsure.core.validation import check_delta, check_target
from howsure.decisions.recalibration import certify_with_split
from howsure.io.scored_tables import load_scored_items
from howsure.io.tables import read_table
from howsure.io.texts import extract_texts, sample_path
from howsure.models import DEFAULT_MODEL
from howsure.pipelines.evaluate import EvaluationConfig, evaluate
from howsure.pipelines.score_job import score_rows
from howsure.report import write_summary

SAMPLE = "rt_polarity_2000.csv"
STAGES = ("load", "scoring", "calibration", "report", "certification")


class StageClock:
    """Wall-clock seconds of consecutive stages: ``lap(name)`` ends the stage that began at the
    previous lap (or at the clock's start)."""

    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.seconds[stage] = now - self._last
        self._last = now

    def table(self) -> dict[str, float]:
        """Each stage's seconds and ``total`` (since the start), rounded to 0.1 s."""
        return {**{stage: round(s, 1) for stage, s in self.seconds.items()},
                "total": round(self._last - self.started, 1)}


@dataclass
class DemoConfig:
    """Settings of the demo run (saved in the report's summary)."""

    model: str = DEFAULT_MODEL
    task: str = "sentiment"
    dtype: str = "float32"
    device: str = "auto"             # see TransformersBackend
    threads: int | None = None
    limit: int | None = None        # score only the first N sample rows (quick look)
    calibrator: str = "auto"         # picked by cross-validated log loss, see docs/calibration.md
    n_folds: int = 5
    target_accuracy: float = 0.9     # what the certified threshold promises on automated items
    delta: float = 0.05              # ... with probability at least 1 - delta
    seed: int = 0


@dataclass
class DemoResult:
    scores_path: Path
    report_path: Path
    policy_path: Path
    summary: dict
    policy: object
    n_items: int
    stage_seconds: dict[str, float] = field(default_factory=dict)  # StageClock.table()


def run_demo(out_dir: str | Path, config: DemoConfig | None = None,
             progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Run the demo into ``out_dir`` (resumes the scoring step if interrupted)."""
    clock = StageClock()
    config = config or DemoConfig()
    check_target(config.target_accuracy)  # bad settings fail before minutes of scoring
    check_delta(config.delta)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    task = load_task(config.task)
    frame = read_table(sample_path(SAMPLE))
    if config.limit:
        frame = frame.head(config.limit)
    rows = extract_texts(frame, "text", "id", "label")
    backend = load_backend(config.model, dtype=config.dtype, device=config.device, threads=config.threads,
                           install=False)
    clock.lap("load")
    scores_path = out_dir / "scores.jsonl"
    score_rows(backend, task, rows, scores_path, source=f"bundled sample {SAMPLE}",
               columns={"text": "text", "id": "id", "label": "label"}, progress=progress)
    clock.lap("scoring")

    items = load_scored_items(scores_path, label_column="label")
    evaluation = evaluate(
        items,
        EvaluationConfig(calibrator=config.calibrator, n_folds=config.n_folds, seed=config.seed,
                         target=config.target_accuracy, title="howsure demo: SmolLM2-135M on Rotten Tomatoes sentences"),
        command="howsure demo",
    )
    clock.lap("calibration")
    written = evaluation.write(out_dir)
    clock.lap("report")

    # The policy: calibrator fitted on one half, threshold certified on the other half, so the
    # certificate's assumption (calibrator fitted on other items) holds; the default method
    # (fallback) needs nothing more than iid items.
    policy = certify_with_split(
        items.probabilities, items.labels, calibrator=config.calibrator, test_size=0.5, seed=config.seed,
        texts=items.texts, ids=items.ids, target_accuracy=config.target_accuracy, delta=config.delta,
        labels=items.label_names, task=task, model_id=config.model,
    ).policy
    policy_path = out_dir / "policy.json"
    policy.save(policy_path)
    clock.lap("certification")
    # The report was written before certification: the stage times join its summary now.
    stage_seconds = evaluation.summary["stage_seconds"] = clock.table()
    write_summary(evaluation.summary, written["summary"])
    return DemoResult(scores_path, written["report"], policy_path, evaluation.summary, policy, items.n_items,
                      stage_seconds)
