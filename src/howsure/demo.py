"""The one-command demo: the whole loop on the bundled sample with the bundled model.

score (resumable) -> honest calibration by cross-fitting -> metrics with intervals and the HTML
report -> a calibrator fitted on one half and a threshold certified on the other half -> a
policy file. Every number it prints comes from items the calibrator was not fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from howsure.data import extract_texts, read_table, sample_path
from howsure.models import DEFAULT_MODEL
from howsure.task import load_task

SAMPLE = "rt_polarity_2000.csv"


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


def run_demo(out_dir: str | Path, config: DemoConfig | None = None,
             progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Run the demo into ``out_dir`` (resumes the scoring step if interrupted)."""
    from howsure.backends import load_backend
    from howsure.evaluation import EvaluationConfig, evaluate, load_scored_items
    from howsure.fit_certify import certify_with_split
    from howsure.scoring_job import score_rows

    from howsure.decisions import check_delta, check_target

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
    scores_path = out_dir / "scores.jsonl"
    score_rows(backend, task, rows, scores_path, source=f"bundled sample {SAMPLE}",
               columns={"text": "text", "id": "id", "label": "label"}, progress=progress)

    items = load_scored_items(scores_path, label_column="label")
    evaluation = evaluate(
        items,
        EvaluationConfig(calibrator=config.calibrator, n_folds=config.n_folds, seed=config.seed,
                         target=config.target_accuracy, title="howsure demo: SmolLM2-135M on Rotten Tomatoes sentences"),
        command="howsure demo",
    )
    written = evaluation.write(out_dir)

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
    return DemoResult(scores_path, written["report"], policy_path, evaluation.summary, policy, items.n_items)
