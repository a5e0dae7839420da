"""The one-command demo: the whole loop on the bundled sample with the bundled model.

score (resumable) -> honest calibration by cross-fitting -> metrics with intervals and the HTML
report -> a calibrator fitted on one half and a threshold certified on the other half -> a
policy file. Every number it prints comes from items the calibrator was not fitted on.

Then (unless ``finetune=False``) a LoRA fine-tune on the bundled training sample, which shares
no text with the 2,000 scored sentences (checked by content hash), the same sentences scored
again with the adapter, both models calibrated and certified on the same halves, and the
automation table: target accuracy against certified automation share, base and fine-tuned.

Each stage's wall-clock seconds are printed by `howsure demo` and kept in summary.json under
``stage_seconds``; every stage resumes after an interruption (scoring and training from their
files, the rest is recomputed in seconds).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from howsure.backends import load_backend
from howsure.backends.transformers import cpu_features
from howsure.calibration.fitting import item_hashes
from howsure.core.task import Task, load_task
from howsure.core.validation import check_delta, check_target
from howsure.decisions.recalibration import certify_with_split
from howsure.errors import DataError
from howsure.finetune import FinetuneConfig, StepReport, finetune, read_labelled_file, trained_hashes
from howsure.io.scored_tables import load_scored_items
from howsure.io.tables import read_table
from howsure.io.texts import extract_texts, sample_path
from howsure.models import DEFAULT_MODEL
from howsure.pipelines.compare import CompareConfig, DEFAULT_TARGETS, ScoredFile, compare, write_comparison
from howsure.pipelines.evaluate import EvaluationConfig, evaluate
from howsure.pipelines.score_job import score_rows
from howsure.report import write_summary

SAMPLE = "rt_polarity_2000.csv"
TRAINING_SAMPLE = "rt_polarity_train_400.csv"   # disjoint from SAMPLE, see samples/README.md
STAGES = ("load", "scoring", "calibration", "report", "certification")
FINETUNE_STAGES = ("finetune", "tuned load", "tuned scoring", "comparison")
# Sized for the 6-minute budget on two CPU cores: 10 steps of 16 of the ~360 training sentences
# (the rest of the 400 is held out for validation); validation after steps 5 and 10 and a
# resumable checkpoint every other step, since the whole run is only ten steps. No LoRA dropout:
# ten steps cannot overfit, and drawing its masks took a sixth of the stage (py-spy).
DEMO_FINETUNE = FinetuneConfig(max_steps=10, batch_size=16, learning_rate=4e-4, eval_interval=5,
                               checkpoint_interval=2, patience=0, dropout=0.0)


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
    finetune: bool = True            # False: the short path (base model only, no automation table)
    adapter: str | None = None       # an existing adapter directory instead of training one
    finetune_config: FinetuneConfig = DEMO_FINETUNE
    targets: tuple[float, ...] = DEFAULT_TARGETS  # rows of the automation table


@dataclass
class DemoResult:
    scores_path: Path
    report_path: Path
    policy_path: Path
    summary: dict
    policy: object
    n_items: int
    stage_seconds: dict[str, float] = field(default_factory=dict)  # StageClock.table()
    automation: dict | None = None   # summary["automation"]: the base / fine-tuned table, when fine-tuned
    tuned_policy_path: Path | None = None
    comparison_path: Path | None = None
    machine: str = ""                # machine_line(): what the stage times were measured on


def run_demo(out_dir: str | Path, config: DemoConfig | None = None,
             progress: Callable[[int, int], None] | None = None, *,
             training_progress: Callable[[StepReport], None] | None = None,
             tuned_progress: Callable[[int, int], None] | None = None) -> DemoResult:
    """Run the demo into ``out_dir``; a rerun resumes the scoring and training where they stopped.

    ``progress`` (done, total) follows the base model's scoring, ``training_progress`` the
    fine-tune's steps and ``tuned_progress`` the fine-tuned model's scoring."""
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
    policy = certify_halves(items, config, task)
    policy_path = out_dir / "policy.json"
    policy.save(policy_path)
    clock.lap("certification")
    result = DemoResult(scores_path, written["report"], policy_path, evaluation.summary, policy, items.n_items)
    if config.finetune:
        _finetune_stages(result, out_dir, config, task, rows, evaluation, clock, training_progress, tuned_progress)
    # The report was written before certification: the stage times join its summary now.
    result.stage_seconds = evaluation.summary["stage_seconds"] = clock.table()
    # The times depend on the CPU's vector units (bf16 and AVX512 or not) and the threads.
    result.machine = evaluation.summary["machine"] = machine_line(backend)
    write_summary(evaluation.summary, written["summary"])
    return result


def machine_line(backend) -> str:
    """The dtype the backend computes in, its torch threads and the CPU's relevant flags."""
    device = getattr(backend, "device", None)
    where = f"{device}" if device is not None and getattr(device, "type", "cpu") != "cpu" else f"{torch.get_num_threads()} threads"
    return f"{getattr(backend, 'dtype', '?')}, {where}; {cpu_features.describe()}"


def certify_halves(items, config: DemoConfig, task: Task):
    """The policy: calibrator fitted on one half, threshold certified on the other half (the
    halves depend only on the labels, the texts and the seed, so both models get the same)."""
    return certify_with_split(
        items.labels, items.probabilities, calibrator=config.calibrator, test_size=0.5, seed=config.seed,
        texts=items.texts, ids=items.ids, target_accuracy=config.target_accuracy, delta=config.delta,
        labels=items.label_names, task=task, model_id=config.model,
    ).policy


def _finetune_stages(result: DemoResult, out_dir: Path, config: DemoConfig, task: Task, rows, base_evaluation,
                     clock: StageClock, training_progress, progress) -> None:
    """Train (or take) the adapter, score the sentences with it, certify both models on the same
    halves and put the automation table into ``result`` and its summary (the base side reuses
    ``base_evaluation``, the base stages' own)."""
    base_items = base_evaluation.items
    scored_hashes = set(item_hashes(base_items.texts, "text"))
    if config.adapter is not None:
        adapter = Path(config.adapter)
        trained = trained_hashes(adapter)
    else:
        adapter = out_dir / "adapter"
        training = read_labelled_file(sample_path(TRAINING_SAMPLE), task)
        trained = set(item_hashes(training.texts, "text"))
    overlap = len(trained & scored_hashes)
    if overlap:
        raise DataError(f"the adapter {str(adapter)!r} was trained on {overlap} of the {base_items.n_items} demo "
                        "sentences; its scores on them would not be held out (train it on other texts)")
    if config.adapter is None:
        finetune(task, training, adapter, model=config.model, config=config.finetune_config, resume=True,
                 device=config.device,  # auto: a CUDA GPU when torch sees one, as for scoring
                 source=f"bundled sample {TRAINING_SAMPLE}", on_step=training_progress)
    clock.lap("finetune")
    backend = load_backend(config.model, dtype=config.dtype, device=config.device, threads=config.threads,
                           install=False, adapter=str(adapter))
    clock.lap("tuned load")
    tuned_path = out_dir / "tuned" / "scores.jsonl"
    tuned_path.parent.mkdir(exist_ok=True)
    score_rows(backend, task, rows, tuned_path, source=f"bundled sample {SAMPLE}",
               columns={"text": "text", "id": "id", "label": "label"}, progress=progress)
    clock.lap("tuned scoring")

    tuned_items = load_scored_items(tuned_path, label_column="label")
    evaluation = EvaluationConfig(calibrator=config.calibrator, n_folds=config.n_folds, seed=config.seed,
                                  target=config.target_accuracy,
                                  title="howsure demo: SmolLM2-135M before and after fine-tuning")
    comparison = compare(ScoredFile(base_items, path=str(result.scores_path), evaluation=base_evaluation),
                         ScoredFile(tuned_items, path=str(tuned_path)),
                         CompareConfig(evaluation=evaluation, delta=config.delta, targets=tuple(config.targets)),
                         command="howsure demo")
    result.comparison_path, _ = write_comparison(comparison, out_dir / "comparison")
    # The fine-tuned model's policy: certified exactly as the base one (same halves, same seed).
    tuned_policy = certify_halves(tuned_items, config, task)
    result.tuned_policy_path = out_dir / "tuned" / "policy.json"
    tuned_policy.save(result.tuned_policy_path)
    result.automation = result.summary["automation"] = automation_table(comparison, config, adapter)
    clock.lap("comparison")


def automation_table(comparison: dict, config: DemoConfig, adapter: Path) -> dict:
    """The demo's closing table from a `compare` summary: each model's accuracy (raw on all
    items, calibrated held out) and certified automation share per target accuracy (0 where
    nothing certifies)."""
    sides = {}
    for key, name in (("base", "base"), ("tuned", "fine-tuned")):
        side = comparison["sides"][key]
        sides[name] = {
            "accuracy": side["headline"]["calibrated"]["accuracy"]["value"],
            "raw_accuracy": side["headline"]["raw"]["accuracy"]["value"],
            "certified_share": {f"{row['target_accuracy']:g}": (row["automation_rate"] or 0.0) if row["certified"] else 0.0
                                for row in side["targets"]},
        }
    return {"targets": [float(t) for t in config.targets], "stated_target": config.target_accuracy,
            "delta": config.delta, "adapter": str(adapter), **sides}
