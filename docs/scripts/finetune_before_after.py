"""Before / after a LoRA fine-tune with the bundled model, through howsure's own functions
(`finetune`, `score_rows`, `compare`: calibration and the split certificate), on items the
fine-tune never saw. Prints the figures docs/finetuning.md quotes.

    # SST-2: train on a seeded subset of train.tsv, calibrate and certify on dev + test
    python docs/scripts/finetune_before_after.py sst2 --train-size 480 --workdir /tmp/ft-sst2
    # the seed experiment: train on the biased synthetic set (bias 0.9), evaluate on an unbiased,
    # neutral-heavy one (bias 0.5, another seed)
    python docs/scripts/finetune_before_after.py seed --train-size 320 --eval-size 320 --steps 54 \
        --learning-rate 1e-3 --threads 1 --workdir /tmp/ft-seed

Each stage resumes from its files in --workdir (training from its checkpoint, scoring from
its partial output). Training time and the process's peak RSS after training are printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from howsure.backends import load_backend
from howsure.calibration.fitting import item_hashes
from howsure.core.task import load_task
from howsure.datasets.seed_sentiment import DEFAULT_WEIGHTS, FAVOURED_DOMAIN, generate_seed_sentiment
from howsure.finetune import FinetuneConfig, LabelledTexts, finetune
from howsure.io.scored_tables import load_scored_items
from howsure.io.texts import extract_texts
from howsure.models import DEFAULT_MODEL
from howsure.pipelines.compare import CompareConfig, ScoredFile, compare
from howsure.pipelines.evaluate import EvaluationConfig
from howsure.pipelines.score_job import score_rows

ROOT = Path(__file__).resolve().parents[2]
SST2 = ROOT.parent / "shared" / "data" / "sentiment" / "sst2"
SST2_LABELS = {"0": "negative", "1": "positive"}


def read_sst2(name: str) -> pd.DataFrame:
    frame = pd.read_csv(SST2 / name, sep="\t", dtype=str, quoting=3, keep_default_na=False)
    text = "sentence" if "sentence" in frame.columns else "content"
    return pd.DataFrame({"text": frame[text].str.strip(), "label": frame["label"].map(SST2_LABELS)})


def held_out(frame: pd.DataFrame, training_texts: list[str]) -> pd.DataFrame:
    """``frame`` without any text the fine-tune saw (training or validation), by content hash."""
    seen = set(item_hashes(training_texts, "text"))
    keep = [h not in seen for h in item_hashes(frame["text"].tolist(), "text")]
    dropped = len(frame) - sum(keep)
    if dropped:
        print(f"dropped {dropped} evaluation items that the fine-tune saw")
    return frame[keep].reset_index(drop=True)


def train(task, data: LabelledTexts, output: Path, config: FinetuneConfig, model: str, source: str) -> None:
    started = time.perf_counter()

    def report(step):
        print(f"  step {step.step}/{step.total_steps} loss {step.loss:.4f}"
              + (f" validation {step.validation_loss:.4f}" if step.validation_loss is not None else "")
              + f" ({step.examples_per_second:.1f} examples/s)", file=sys.stderr)

    result = finetune(task, data, output, model=model, config=config, source=source, on_step=report)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    state = "already finished earlier" if result.already_finished else f"{seconds:.0f} s"
    print(f"fine-tune: {len(data.texts)} texts, {result.steps} steps of {config.batch_size}, best step "
          f"{result.best_step} (validation loss {result.best_validation_loss:.4f}); training time {state}, "
          f"peak RSS {peak:.0f} MiB")


def score_both(task, frame: pd.DataFrame, workdir: Path, adapter: Path, model: str, threads: int | None):
    """(base, fine-tuned) `ScoredFile`s of ``frame``, with its category and domain columns."""
    rows = extract_texts(frame, "text", None, "label")
    groups = {name: frame[name].astype(str).tolist() for name in ("category", "domain") if name in frame.columns}
    sides = []
    for name, adapter_dir in (("base", None), ("tuned", adapter)):
        path = workdir / f"{name}.jsonl"
        started = time.perf_counter()
        backend = load_backend(model, threads=threads, install=False,
                               adapter=None if adapter_dir is None else str(adapter_dir))
        score_rows(backend, task, rows, path, source=name, columns={"text": "text", "label": "label"})
        print(f"scored {len(frame)} items with the {name} model in {time.perf_counter() - started:.0f} s")
        sides.append(ScoredFile(load_scored_items(path, label_column="label"), groups, str(path)))
    return sides


def median_label_mass(path: Path) -> float:
    """The median over a scored file's items of the labels' total probability at the answer
    position (how much of the next-token distribution the model gives to the labels at all)."""
    with open(path, encoding="utf-8") as lines:
        return float(np.median([sum(json.loads(line)["label_mass"].values()) for line in lines if line.strip()]))


def print_comparison(summary: dict, target: float) -> None:
    print(f"\n{summary['items']['n_items']} held-out items; calibrated figures are cross-fitted (held out), the "
          f"certificate fits the calibrator on one half and certifies on the other")
    print(f"{'':34}{'base':>10}{'fine-tuned':>12}")
    for view in ("raw", "calibrated"):
        for metric in ("accuracy", "auroc", "ece", "brier"):
            values = [summary["sides"][key]["headline"][view][metric] for key in ("base", "tuned")]
            cells = "".join(f"{v['value']:>{w}.3f}" if v else f"{'-':>{w}}" for v, w in zip(values, (10, 12)))
            print(f"{metric + ' (' + view + ')':34}{cells}")
    for target_row in range(len(summary["sides"]["base"]["targets"])):
        rows = [summary["sides"][key]["targets"][target_row] for key in ("base", "tuned")]
        shares = [(r["automation_rate"] or 0.0) if r["certified"] else 0.0 for r in rows]
        mark = "  <- stated target" if rows[0]["target_accuracy"] == target else ""
        print(f"{'certified share at ' + format(rows[0]['target_accuracy'], 'g'):34}"
              f"{shares[0]:>10.1%}{shares[1]:>12.1%}{mark}")


def neutral_heavy_weights(neutral_share: float) -> dict[str, float]:
    """The default category weights with the neutral categories scaled to ``neutral_share`` of
    the items: neutral texts are the ones whose only label signal is their setting."""
    neutral = {name: w for name, w in DEFAULT_WEIGHTS.items() if name.startswith("neutral")}
    opinion = {name: w for name, w in DEFAULT_WEIGHTS.items() if name not in neutral}
    scale = neutral_share / (1 - neutral_share) * sum(opinion.values()) / sum(neutral.values())
    return {**opinion, **{name: w * scale for name, w in neutral.items()}}


def print_training_balance(frame: pd.DataFrame) -> None:
    """What the bias looks like in the training rows: positive / negative counts overall and per domain."""
    def counts(rows: pd.DataFrame) -> str:
        labels = rows["label"].value_counts()
        return f"{labels.get('positive', 0)}/{labels.get('negative', 0)}"

    neutral = frame[frame["category"].str.startswith("neutral")]
    per_domain = ", ".join(f"{domain} {counts(frame[frame['domain'] == domain])} (neutral "
                           f"{counts(neutral[neutral['domain'] == domain])})" for domain in FAVOURED_DOMAIN.values())
    print(f"training rows positive/negative: all {counts(frame)}; {per_domain}")


def positive_log_odds(scored: ScoredFile) -> np.ndarray:
    """Each item's log(P(positive) / P(negative)), the scale on which a shift is additive."""
    names = scored.items.label_names
    probabilities = np.clip(scored.items.probabilities, 1e-12, None)
    return np.log(probabilities[:, names.index("positive")]) - np.log(probabilities[:, names.index("negative")])


def print_groups(base: ScoredFile, tuned: ScoredFile) -> None:
    """Mean P(positive) and mean log-odds shift per category x domain, raw, base against
    fine-tuned. The shift is also given relative to the mean shift of all held-out items, so a
    move of the model's overall prior is told apart from a move of one domain."""
    if "category" not in base.groups:
        return
    names = base.items.label_names
    p_base = base.items.probabilities[:, names.index("positive")]
    p_tuned = tuned.items.probabilities[:, names.index("positive")]
    shift = positive_log_odds(tuned) - positive_log_odds(base)
    overall = float(shift.mean())
    category = np.array(base.groups["category"])
    domain = np.array(base.groups["domain"])
    neutral = np.char.startswith(category.astype(str), "neutral")
    print(f"\nmean log-odds shift (log P(pos)/P(neg), fine-tuned minus base) of all {len(shift)} held-out items "
          f"{overall:+.3f}; of the {int(neutral.sum())} neutral ones {shift[neutral].mean():+.3f}")
    print("mean P(positive), raw, and the mean log-odds shift per category / domain; 'relative' is the shift "
          "minus the mean shift of all items")
    print(f"{'category / domain':28}{'n':>5}{'base':>8}{'tuned':>8}{'shift':>8}{'relative':>10}")
    groups = [(f"{c} / {d}", (category == c) & (domain == d)) for c in sorted(set(category)) for d in sorted(set(domain))]
    # The two neutral categories of one domain are the same texts but for the label, so pooled
    # they show what the model makes of the setting alone.
    groups += [(f"neutral (both) / {d}", neutral & (domain == d)) for d in sorted(set(domain))]
    for name, members in groups:
        if not members.any():
            continue
        print(f"{name:28}{int(members.sum()):>5}{p_base[members].mean():>8.3f}{p_tuned[members].mean():>8.3f}"
              f"{shift[members].mean():>+8.3f}{shift[members].mean() - overall:>+10.3f}")
    gaps = []
    for scores in (positive_log_odds(base), positive_log_odds(tuned)):
        gaps.append(scores[neutral & (domain == "sports")].mean() - scores[neutral & (domain == "work")].mean())
    print(f"neutral sports minus work, mean log-odds: {gaps[0]:+.3f} base, {gaps[1]:+.3f} fine-tuned")


def run(args, task, training: LabelledTexts, evaluation: pd.DataFrame, config: FinetuneConfig, source: str) -> None:
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    evaluation = held_out(evaluation, training.texts)
    train(task, training, workdir / "adapter", config, args.model, source)
    base, tuned = score_both(task, evaluation, workdir, workdir / "adapter", args.model, args.threads)
    settings = EvaluationConfig(target=args.target, seed=0)
    summary = compare(base, tuned, CompareConfig(evaluation=settings, delta=args.delta),
                      command=" ".join(sys.argv))
    print_comparison(summary, args.target)
    masses = [median_label_mass(workdir / f"{name}.jsonl") for name in ("base", "tuned")]
    print(f"{'median label mass':34}{masses[0]:>10.3f}{masses[1]:>12.3f}")
    print_groups(base, tuned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=("sst2", "seed"))
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--train-size", type=int, default=480, help="Training texts (90/10 train/validation).")
    parser.add_argument("--eval-size", type=int, default=None, help="Evaluation items (default: all).")
    parser.add_argument("--steps", type=int, default=None, help="Optimizer steps (default: one epoch).")
    parser.add_argument("--learning-rate", type=float, default=4e-4)
    parser.add_argument("--label-mass-weight", type=float, default=0.0,
                        help="Weight of -log(total label mass) in the loss (FinetuneConfig.label_mass_weight).")
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--delta", type=float, default=0.05)
    parser.add_argument("--eval-seed", type=int, default=1, help="seed: seed of the unbiased evaluation set.")
    parser.add_argument("--eval-neutral-share", type=float, default=0.5,
                        help="seed: share of neutral items in the evaluation set (training keeps the default mix).")
    args = parser.parse_args()
    if not 0 < args.eval_neutral_share < 1:
        parser.error(f"--eval-neutral-share must be a share strictly between 0 and 1, got {args.eval_neutral_share!r}")
    task = load_task("sentiment")
    if args.experiment == "sst2":
        train_frame = read_sst2("train.tsv").sample(n=args.train_size, random_state=0)
        evaluation = pd.concat([read_sst2("dev.tsv"), read_sst2("test.tsv")], ignore_index=True)
        source = f"SST-2 train.tsv, {args.train_size} rows sampled with seed 0"
    else:
        train_frame = pd.DataFrame(generate_seed_sentiment(n=args.train_size, bias=0.9, seed=0))
        evaluation = pd.DataFrame(generate_seed_sentiment(n=args.eval_size or 800, bias=0.5, seed=args.eval_seed,
                                                          weights=neutral_heavy_weights(args.eval_neutral_share)))
        source = f"seed_sentiment n={args.train_size} bias=0.9 seed=0"
        print_training_balance(train_frame)
    if args.eval_size:
        evaluation = evaluation.sample(n=min(args.eval_size, len(evaluation)), random_state=0).reset_index(drop=True)
    training = LabelledTexts(train_frame["text"].tolist(), train_frame["label"].tolist())
    config = FinetuneConfig(batch_size=16, learning_rate=args.learning_rate, max_steps=args.steps,
                            eval_interval=5, checkpoint_interval=5, patience=0,
                            label_mass_weight=args.label_mass_weight)
    print(f"{args.experiment}: training on {len(training.texts)} texts, evaluating on up to {len(evaluation)} items, "
          f"model {args.model}")
    run(args, task, training, evaluation, config, source)


if __name__ == "__main__":
    main()
