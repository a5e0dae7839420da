"""Verbal confidence before and after probe-targeted LoRA fine-tuning (docs/answers.md, "Teaching the model to say it").

Three steps, the middle one the real command line:

    python docs/scripts/verbal_before_after.py prepare --workdir W
    howsure finetune-verbal --input W/train.jsonl --output W/adapter
    python docs/scripts/verbal_before_after.py compare --workdir W

``prepare`` makes seeded closed-form questions, has the model answer each (greedy, the
verbal-confidence prompt), judges the answer (the last number on its first line equals the
gold number), and gives each question a target P(correct): a linear probe (standardised
logistic regression) on the hidden state at the answer's last token of a layer fixed in advance
(the middle one), cross-fitted over 5 folds so that no question's target comes from a probe fitted
on it. A share of the questions (by content hash) is the test set, written apart and never
trained on; the rest is train.jsonl.

``compare`` makes the base model and the model with the adapter continue each test question's
prompt and the model's own (fixed) answer, reads the stated confidence, and prints AUROC, ECE,
RMS calibration error (adaptive bins of 100) and the share of distinct values of each, beside the
probe targets themselves.

TODO(issue 16): take questions, answers and judgements from `howsure qa` (helper D) and the
targets from `howsure probe` (helper E) once merged; neither was on main when this was written.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch

from howsure.backends.transformers.adapters import load_base_model, trained_hashes
from howsure.calibration.fitting import HASH_DIGITS, item_hashes
from howsure.answers.generation import AnswerGenerator
from howsure.backends.transformers.backend import TransformersBackend
from howsure.finetune.completion_eval import confidence_after_answer, score_confidences, verbal_outputs
from howsure.finetune.verbal import PromptBuilder, VerbalRecords, read_verbal_file, verbal_task

LEAD_IN = "\nConfidence:"
KINDS = {
    "a + b (one digit)": lambda rng: (lambda a, b: (f"What is {a} + {b}?", a + b))(*rng.integers(0, 10, 2)),
    "a + 1": lambda rng: (lambda a: (f"What is {a} + 1?", a + 1))(int(rng.integers(1, 100))),
    "a - 1": lambda rng: (lambda a: (f"What is {a} - 1?", a - 1))(int(rng.integers(2, 21))),
    "after a": lambda rng: (lambda a: (f"What number comes after {a}?", a + 1))(int(rng.integers(1, 100))),
    "a + a": lambda rng: (lambda a: (f"What is {a} + {a}?", 2 * a))(int(rng.integers(1, 10))),
    "a times 1": lambda rng: (lambda a: (f"What is {a} times 1?", a))(int(rng.integers(2, 100))),
}


def questions(n_per_kind: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen, out = set(), []
    for kind, make in KINDS.items():
        made, tries = 0, 0
        while made < n_per_kind and tries < 50 * n_per_kind:
            question, gold = make(rng)
            tries += 1
            if question not in seen:
                seen.add(question)
                out.append({"question": question, "gold": str(int(gold)), "kind": kind})
                made += 1
    return out


def judge(answer: str, gold: str) -> bool:
    numbers = re.findall(r"-?\d+", answer.strip().split("\n")[0])
    return bool(numbers) and numbers[-1] == gold


def last_token_states(model, prompts: list[list[int]], layer: int, pad: int, batch_size: int = 32) -> np.ndarray:
    rows = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        width = max(map(len, chunk))
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(chunk):  # left padding: every row's last token is the last position
            ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
        with torch.no_grad():
            rows.append(model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                        .hidden_states[layer][:, -1, :].float().numpy())
    return np.vstack(rows)


def crossfit_probe(features: np.ndarray, correct: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = np.full(len(correct), np.nan)
    for fit, held in StratifiedKFold(5, shuffle=True, random_state=seed).split(features, correct):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
        probe.fit(features[fit], correct[fit])
        out[held] = probe.predict_proba(features[held])[:, 1]
    return out


def generator(model: str, adapter, max_new_tokens: int) -> AnswerGenerator:
    """Greedy continuations that only the end-of-turn token ends, as the adapter was trained."""
    backend = TransformersBackend(model, adapter=None if adapter is None else str(adapter))
    return AnswerGenerator(backend, max_new_tokens=max_new_tokens, stop=(), batch_size=32)


def prepare(args) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    tokenizer, model = load_base_model(args.model)
    model.eval()
    task = verbal_task()
    builder = PromptBuilder(tokenizer, task)
    items = questions(args.n_per_kind, args.seed)
    started = time.perf_counter()
    outputs = verbal_outputs(generator(args.model, None, 8), VerbalRecords(
        [i["question"] for i in items], [""] * len(items), [False] * len(items), [0.0] * len(items)), task)
    print(f"answered {len(items)} questions in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    for item, output in zip(items, outputs):
        item["answer"] = output.strip().split("\n")[0].strip()
        item["correct"] = judge(item["answer"], item["gold"])
    correct = np.array([i["correct"] for i in items], dtype=int)
    layer = model.config.num_hidden_layers // 2
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    states = last_token_states(model, [builder.prompt_ids(i["question"], i["answer"]) for i in items], layer, pad)
    target = crossfit_probe(states, correct, args.seed)
    scale = 16 ** HASH_DIGITS
    test_side = [int(h, 16) / scale < args.test_fraction for h in item_hashes([i["question"] for i in items], "text")]
    for item, p, is_test in zip(items, target, test_side):
        item["target_confidence"] = round(float(p), 4)
        item["split"] = "test" if is_test else "train"
    for part in ("train", "test"):
        with open(work / f"{part}.jsonl", "w") as handle:
            for item in items:
                if item["split"] == part:
                    handle.write(json.dumps(item) + "\n")
    print(f"probe: layer {layer} of {model.config.num_hidden_layers}, cross-fitted over 5 folds")
    print(f"{len(items)} questions, {int(correct.sum())} answered right ({correct.mean():.1%}); "
          f"{sum(test_side)} test, {len(items) - sum(test_side)} train -> {work}")
    # The trainer holds out the questions whose hash is below its validation fraction, and the test
    # set took those below test_fraction: a validation fraction above it leaves a validation split.
    print(f"train with --validation-fraction above {args.test_fraction} (e.g. {min(args.test_fraction + 0.1, 0.9):g}): "
          "the test questions took the hashes below it")
    for kind in KINDS:
        chosen = [i for i in items if i["kind"] == kind]
        print(f"  {kind:<18} {sum(i['correct'] for i in chosen):>3} / {len(chosen)} right, "
              f"mean target {np.mean([i['target_confidence'] for i in chosen]):.2f}")


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
    parser.add_argument("step", choices=("prepare", "compare"))
    parser.add_argument("--workdir", default="verbal-run")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--adapter", default=None, help="default: WORKDIR/adapter")
    parser.add_argument("--n-per-kind", type=int, default=80)
    parser.add_argument("--test-fraction", type=float, default=0.4)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-only", action="store_true", help="only the base model's outputs (kept for later)")
    parser.add_argument("--limit", type=int, default=None, help="compare on LIMIT evenly spaced test questions")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prepare(args) if args.step == "prepare" else compare(args)


if __name__ == "__main__":
    main()
