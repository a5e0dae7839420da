"""Verbal confidence before and after probe-targeted LoRA fine-tuning (docs/answers.md, "Teaching the model to say it").

Every step but the split and the comparison is a howsure command:

    howsure qa --input Q.jsonl --output W/qa.jsonl --save-hidden W/hidden.npy
    howsure qa-report -i W/qa.jsonl --hidden W/hidden.npy -o W/report.html --targets-out W/targets.jsonl
    python docs/scripts/verbal_before_after.py split --targets W/targets.jsonl --workdir W
    howsure finetune-verbal --input W/train.jsonl --output W/adapter --validation-fraction 0.5
    python docs/scripts/verbal_before_after.py compare --workdir W

``targets.jsonl`` holds each question, the model's answer, its judged correctness and
``target_confidence``, the hidden-state probe's nested cross-fitted P(correct) (no question's
value from a probe fitted on it). ``split`` puts a share of the questions (by content hash) in
test.jsonl, never trained on, the rest in train.jsonl.

``compare`` makes the base model and the model with the adapter continue each test question's
prompt and the model's own (fixed) answer, reads the stated confidence, and prints AUROC, ECE,
RMS calibration error (adaptive bins of 100) and the share of distinct values of each, beside the
probe targets themselves.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from howsure.backends.transformers.adapters import trained_hashes
from howsure.io.records import read_records
from howsure.calibration.fitting import HASH_DIGITS, item_hashes
from howsure.answers.generation import AnswerGenerator
from howsure.backends.transformers.backend import TransformersBackend
from howsure.finetune.completion_eval import confidence_after_answer, score_confidences, verbal_outputs
from howsure.finetune.verbal import VerbalRecords, read_verbal_file, verbal_task

LEAD_IN = "\nConfidence:"


def generator(model: str, adapter, max_new_tokens: int) -> AnswerGenerator:
    """Greedy continuations that only the end-of-turn token ends, as the adapter was trained."""
    backend = TransformersBackend(model, adapter=None if adapter is None else str(adapter))
    return AnswerGenerator(backend, max_new_tokens=max_new_tokens, stop=(), batch_size=32)


def split(args) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    items = read_records(Path(args.targets))
    scale = 16 ** HASH_DIGITS
    test_side = [int(h, 16) / scale < args.test_fraction for h in item_hashes([i["question"] for i in items], "text")]
    for part, wanted in (("train", False), ("test", True)):
        with open(work / f"{part}.jsonl", "w") as handle:
            for item, is_test in zip(items, test_side):
                if is_test == wanted:
                    handle.write(json.dumps(item) + "\n")
    right = sum(bool(i["correct"]) for i in items)
    print(f"{len(items)} questions, {right} answered right ({right / len(items):.1%}); "
          f"{sum(test_side)} test, {len(items) - sum(test_side)} train -> {work}")
    # The trainer holds out the questions whose hash is below its validation fraction, and the test
    # set took those below test_fraction: a validation fraction above it leaves a validation split.
    print(f"train with --validation-fraction above {args.test_fraction} (e.g. {min(args.test_fraction + 0.1, 0.9):g}): "
          "the test questions took the hashes below it")


def compare(args) -> None:
    work = Path(args.workdir)
    adapter = Path(args.adapter or work / "adapter")
    test = read_verbal_file(work / "test.jsonl")
    if args.limit and args.limit < len(test):  # evenly spaced over the file, so every kind keeps its share
        keep = np.unique(np.linspace(0, len(test) - 1, args.limit).round().astype(int))
        test = VerbalRecords(*([part[i] for i in keep] for part in (test.questions, test.answers, test.correct,
                                                                      test.targets)))
    if not args.base_only:
        overlap = set(item_hashes(test.questions, "text")) & trained_hashes(adapter)
        if overlap:
            raise SystemExit(f"{len(overlap)} test questions are in the adapter's training or validation split")
    task = verbal_task()
    rows = {"probe target (what was taught)": test.targets}
    said = {}
    # The base model rarely says a confidence by itself; led in with "Confidence:" after its answer
    # it must say a number, the fairest "before" (the lead-in is prefixed again to parse its reply).
    passes = (("base model, verbal", False, ""), ("base model, led in with 'Confidence:'", False, LEAD_IN),
              ("with adapter, verbal", True, ""))
    for name, with_adapter, lead_in in passes:
        if with_adapter and args.base_only:
            return
        # The base model's outputs are kept, so that a later compare (once the adapter is trained) reuses them.
        kept = work / f"base_outputs_{len(test)}{'_led' if lead_in else ''}.json"
        if not with_adapter and kept.exists() and json.loads(kept.read_text())["questions"] == test.questions:
            said[name] = json.loads(kept.read_text())["outputs"]
        else:
            started = time.perf_counter()
            led = VerbalRecords(test.questions, [a + lead_in for a in test.answers], test.correct, test.targets)
            said[name] = verbal_outputs(generator(args.model, adapter if with_adapter else None, args.max_new_tokens),
                                        led, task)
            print(f"{name}: {len(test)} continuations in {time.perf_counter() - started:.0f} s", file=sys.stderr)
            if not with_adapter:
                kept.write_text(json.dumps({"questions": test.questions, "outputs": said[name]}))
        rows[name] = [confidence_after_answer(lead_in.strip() + o) for o in said[name]]
    print(f"{len(test)} held-out questions (none trained on or used for validation), "
          f"{sum(test.correct)} answered right ({np.mean(test.correct):.1%})")
    print("| confidence | readable | AUROC | ECE | RMS cal. error (bins of 100) | distinct share | mean |")
    print("|---|---|---|---|---|---|---|")
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    flags = []
    for name, confidences in rows.items():
        s = score_confidences(test.correct, confidences)
        print(f"| {name} | {s.n_readable}/{s.n} | {fmt(s.auroc)} | {fmt(s.ece)} | {fmt(s.rms_calibration_error)} | "
              f"{fmt(s.distinct_share)} | {fmt(s.mean_confidence)} |")
        flags += [f"{name}: {flag}" for flag in s.flags]
    for flag in flags:
        print(f"flag: {flag}")
    for name, outputs in said.items():
        print(f"{name}, first outputs: {[o for o in outputs[:4]]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("step", choices=("split", "compare"))
    parser.add_argument("--targets", default=None, help="split: `howsure qa-report --targets-out` output")
    parser.add_argument("--workdir", default="verbal-run")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default=None, help="default: WORKDIR/adapter")
    parser.add_argument("--test-fraction", type=float, default=0.4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--base-only", action="store_true", help="only the base model's outputs (kept for later)")
    parser.add_argument("--limit", type=int, default=None, help="compare on LIMIT evenly spaced test questions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    split(args) if args.step == "split" else compare(args)


if __name__ == "__main__":
    main()
