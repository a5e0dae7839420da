"""Training speed of howsure's LoRA trainer against a plain transformers + peft loop.

Both train the same model on the same SST-2 training rows, batches, LoRA config (from
`FinetuneConfig`), initial adapter weights and loss (`howsure.finetune.loss`: cross-entropy of
the label probabilities at the answer position). They differ in how the prompt is run:

* howsure: the shared prompt prefix once per batch, its keys and values read by every row
  (gradients through them), the rows packed without padding, the vocabulary projection at the
  answer position only (`howsure.finetune.forward`);
* plain: every row's full prompt, left-padded, all positions' logits, as a hand-written
  peft loop does.

Each runs in its own child process (so each peak RSS is its own), and the two take their
optimizer steps in turn, one step each, so that the load of a shared machine falls on both
alike: training examples per second over the steps after the first (warm-up), the
validation loss after the same steps on the same held-out rows, and peak memory
(``resource.getrusage`` max RSS).

    python bench/bench_finetune.py                       # bundled model, 2 threads, 10 steps
    python bench/bench_finetune.py --steps 3 --examples 96  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SST2_TRAIN = ROOT.parent / "shared" / "data" / "sentiment" / "sst2" / "train.tsv"


def load_rows(path: Path, examples: int):
    from howsure.finetune import LabelledTexts, read_labelled_file
    from howsure.core.task import load_task

    task = load_task("sentiment")
    data = read_labelled_file(path, task, "sentence", "label", {"0": "negative", "1": "positive"})
    return task, LabelledTexts(data.texts[:examples], data.labels[:examples])


def run_child(args) -> dict:
    import torch
    from peft import LoraConfig, get_peft_model

    from howsure.finetune import FinetuneConfig, resolve_target_modules, split_train_validation
    from howsure.backends.transformers.adapters import load_base_model
    from howsure.finetune.forward import PromptEncoder, batch_log_probs
    from howsure.finetune.loss import answer_position_loss, gold_indices, label_cross_entropy
    from howsure.finetune.trainer import batch_indices

    torch.set_num_threads(args.threads)
    task, data = load_rows(Path(args.train), args.examples)
    config = FinetuneConfig(batch_size=args.batch_size, max_steps=args.steps)
    split = split_train_validation(data, task, config.validation_fraction)
    tokenizer, base = load_base_model(args.model)
    torch.manual_seed(config.seed)
    model = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha, lora_dropout=config.dropout,
                                            target_modules=resolve_target_modules(base, config.target_modules)))
    encoder = PromptEncoder(tokenizer, task, share_prefix=args.child == "howsure")
    train_rows = encoder.rows(split.train.texts, config.max_length)
    validation_rows = encoder.rows(split.validation.texts, config.max_length)
    train_gold = gold_indices(split.train.labels, task.label_names)
    validation_gold = gold_indices(split.validation.labels, task.label_names)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = torch.device("cpu")

    def plain_loss(rows, gold):
        """The full prompt of every row, left-padded; logits at every position, as usual."""
        longest = max(len(r.suffix) for r in rows)
        ids = torch.full((len(rows), longest), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, longest - len(row.suffix):] = torch.tensor(row.suffix)
            mask[i, longest - len(row.suffix):] = 1
        positions = (mask.cumsum(1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits
        return answer_position_loss(logits, gold, encoder.vocab)

    def loss_of(rows, gold):
        if args.child == "howsure":
            return label_cross_entropy(batch_log_probs(model, encoder, rows, device), gold)
        return plain_loss(rows, gold)

    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / args.steps))
    steps_per_epoch = -(-len(train_rows) // config.batch_size)
    model.train()
    timed_examples, timed_seconds, losses = 0, 0.0, []
    for step in range(args.steps):
        sys.stdin.readline()  # the parent's turn signal: the two trainers alternate steps
        started = time.perf_counter()
        indices = batch_indices(step, steps_per_epoch, len(train_rows), config)
        loss = loss_of([train_rows[i] for i in indices], train_gold[indices])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        seconds = time.perf_counter() - started
        if step:  # the first step warms up allocators and kernels
            timed_examples += len(indices)
            timed_seconds += seconds
        print(json.dumps({"step": step, "seconds": seconds}), flush=True)
    sys.stdin.readline()
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(validation_rows), config.batch_size):
            chunk = list(range(start, min(start + config.batch_size, len(validation_rows))))
            total += loss_of([validation_rows[i] for i in chunk], validation_gold[chunk]).item() * len(chunk)
    return {
        "trainer": args.child,
        "examples_per_second": timed_examples / timed_seconds if timed_seconds else float("nan"),
        "validation_loss": total / len(validation_rows),
        "last_training_loss": losses[-1],
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "prompt_tokens_per_row": sum(len(r.suffix) for r in train_rows) / len(train_rows),
        "train_rows": len(train_rows),
        "validation_rows": len(validation_rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--train", default=str(SST2_TRAIN))
    parser.add_argument("--examples", type=int, default=400, help="Rows of the training file used (split 90/10).")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=("howsure", "plain"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_child(args)))
        return
    children, logs = {}, {}
    for name in ("howsure", "plain"):
        command = [sys.executable, __file__, "--child", name, "--model", args.model, "--train", args.train,
                   "--examples", str(args.examples), "--steps", str(args.steps), "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)]
        logs[name] = tempfile.TemporaryFile("w+")
        children[name] = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                          stderr=logs[name], env={**os.environ})
    step_seconds = {name: [] for name in children}
    for step in range(args.steps + 1):  # the last turn is the validation pass
        for name, child in children.items():
            child.stdin.write("go\n")
            child.stdin.flush()
            line = child.stdout.readline()
            if not line:
                logs[name].seek(0)
                sys.exit(f"the {name} trainer stopped:\n{logs[name].read()[-3000:]}")
            if step < args.steps:
                step_seconds[name].append(json.loads(line)["seconds"])
                print(f"step {step + 1}/{args.steps} {name}: {step_seconds[name][-1]:.2f} s", file=sys.stderr)
            else:
                children[name].result = json.loads(line)
    results = {name: child.result for name, child in children.items()}
    for child in children.values():
        child.wait()
    print(f"{args.steps} steps of {args.batch_size} rows, {args.threads} threads, model {args.model}")
    print(f"{'':28}{'howsure':>12}{'plain peft':>12}")
    for key, label, form in (("examples_per_second", "training examples/s", "{:12.2f}"),
                             ("validation_loss", "validation loss after", "{:12.4f}"),
                             ("last_training_loss", "last training loss", "{:12.4f}"),
                             ("peak_rss_mib", "peak RSS (MiB)", "{:12.0f}"),
                             ("prompt_tokens_per_row", "tokens run per row", "{:12.1f}")):
        print(f"{label:28}" + "".join(form.format(results[n][key]) for n in ("howsure", "plain")))
    speedup = results["howsure"]["examples_per_second"] / results["plain"]["examples_per_second"]
    # Per step pair (each pair ran back to back): the spread says how much the load moved.
    pairs = sorted(p / h for h, p in zip(step_seconds["howsure"][1:], step_seconds["plain"][1:]))
    print(f"speed-up: {speedup:.2f}x (target >= 2x); per step pair: median {pairs[len(pairs) // 2]:.2f}x, "
          f"range {pairs[0]:.2f}x-{pairs[-1]:.2f}x")


if __name__ == "__main__":
    main()
