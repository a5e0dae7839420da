"""The LoRA trainer: AdamW on the answer-position label loss over the task's own prompt, with
validation for early stopping and checkpoint choice, and checkpoints that a rerun of the same
command resumes from, ending with the same adapter as a run that was never interrupted."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from howsure.backends.transformers.adapters import (
    METADATA_FILE, base_model_checksum, load_base_model, quiet_peft, read_metadata, resolve_target_modules, write_metadata,
)
from howsure.backends.transformers.backend import resolve_device
from howsure.core.task import Task
from howsure.errors import DataError, ResumeError
from howsure.finetune.config import FinetuneConfig
from howsure.finetune.data import LabelledTexts, split_train_validation
from howsure.finetune.forward import PromptEncoder, batch_log_masses
from howsure.finetune.loss import gold_indices, label_loss
from howsure.models import DEFAULT_MODEL

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.pt"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_FILES = (ADAPTER_WEIGHTS, "adapter_config.json", "README.md")


@dataclass(frozen=True)
class StepReport:
    """What the trainer tells its caller after each optimizer step (for a progress bar)."""

    step: int
    total_steps: int
    loss: float
    validation_loss: float | None
    best_validation_loss: float | None
    examples_per_second: float


@dataclass
class FinetuneResult:
    output: Path
    steps: int
    best_step: int
    best_validation_loss: float
    resumed_from: int | None
    already_finished: bool
    metadata: dict[str, Any] = field(default_factory=dict)


def finetune(
    task: Task,
    data: LabelledTexts,
    output: str | Path,
    *,
    model: str = DEFAULT_MODEL,
    config: FinetuneConfig = FinetuneConfig(),
    resume: bool = True,
    device: str = "cpu",
    source: str | None = None,
    on_step: Callable[[StepReport], None] | None = None,
    objective: Any = None,
) -> FinetuneResult:
    """Train a LoRA adapter for ``task`` on ``data`` and write it to ``output``.

    ``data`` is split into training and validation by content hash (`split_train_validation`).
    With ``resume`` (the default) a rerun continues from ``output``'s last checkpoint when it
    belongs to the same run (same task, base model, data and config; else `ResumeError`), and
    returns at once when that run already finished. The final adapter is the checkpoint with
    the lowest validation loss. ``on_step`` gets a `StepReport` after every step.
    ``objective`` (default: the answer-position label loss) replaces the loss: an object with
    ``fingerprint()``, ``prepare(tokenizer, split, max_length) -> n_train``,
    ``train_loss(model, rows, device)`` and ``validation_loss(model, batch_size, device)``
    (`howsure.finetune.verbal.CompletionObjective`).
    """
    output = Path(output)
    split = split_train_validation(data, task, config.validation_fraction)
    checksum = base_model_checksum(model)
    run_key = _run_key(task, checksum, config, split.manifest, objective.fingerprint() if objective is not None else None)
    _refuse_foreign_output(output)
    if resume and (output / METADATA_FILE).exists():
        finished = read_metadata(output)
        if finished.get("run_key") != run_key:
            raise ResumeError(f"{str(output)!r} holds an adapter from another run (other task, model, data or "
                              "settings); choose another --output or pass --no-resume to replace it")
        training = finished["training"]
        return FinetuneResult(output, training["steps"], training["best_step"], training["best_validation_loss"],
                              None, True, finished)
    the_device = resolve_device(device)
    tokenizer, base = load_base_model(model, the_device)
    targets = resolve_target_modules(base, config.target_modules)
    if not resume:  # only now: a bad --device, model or target module must not cost the old adapter
        _clear_run(output)
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(config.seed)  # the adapters' initial weights
    with quiet_peft():
        peft_model = get_peft_model(base, LoraConfig(r=config.rank, lora_alpha=config.alpha,
                                                     lora_dropout=config.dropout, target_modules=targets, bias="none"))
    if objective is None:
        encoder = PromptEncoder(tokenizer, task)
        train_rows = encoder.rows(split.train.texts, config.max_length)
        validation_rows = encoder.rows(split.validation.texts, config.max_length)
        train_gold = gold_indices(split.train.labels, task.label_names)
        validation_gold = gold_indices(split.validation.labels, task.label_names)
    n_train = objective.prepare(tokenizer, split, config.max_length) if objective is not None else len(train_rows)
    steps_per_epoch = math.ceil(n_train / config.batch_size)
    total_steps = config.max_steps or config.epochs * steps_per_epoch
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1.0 - step / total_steps))
    state = {"step": 0, "best_validation_loss": math.inf, "best_step": 0, "evaluations_without_gain": 0,
             "history": []}
    resumed_from = None
    if resume and (output / CHECKPOINT_DIR / STATE_FILE).exists():
        state = _load_checkpoint(output / CHECKPOINT_DIR, run_key, peft_model, optimizer, scheduler, the_device)
        resumed_from = state["step"]
    output.mkdir(parents=True, exist_ok=True)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if the_device.type == "cuda" and torch.cuda.is_bf16_supported() else contextlib.nullcontext())

    def evaluate() -> float:
        peft_model.eval()
        if objective is not None:
            with torch.no_grad(), autocast:
                mean = objective.validation_loss(peft_model, config.batch_size, the_device)
            peft_model.train()
            return mean
        total = 0.0
        order = sorted(range(len(validation_rows)), key=lambda i: len(validation_rows[i].suffix))
        with torch.no_grad(), autocast:
            for start in range(0, len(order), config.batch_size):
                chunk = order[start:start + config.batch_size]
                log_masses = batch_log_masses(peft_model, encoder, [validation_rows[i] for i in chunk], the_device)
                total += float(label_loss(log_masses, validation_gold[chunk].to(the_device),
                                          config.label_mass_weight)) * len(chunk)
        peft_model.train()
        return total / len(order)

    peft_model.train()
    stop = False
    latest_validation = state["history"][-1]["validation_loss"] if state["history"] else None
    while state["step"] < total_steps and not stop:
        started = time.perf_counter()
        rows = batch_indices(state["step"], steps_per_epoch, n_train, config)
        with autocast:
            if objective is not None:
                loss = objective.train_loss(peft_model, rows, the_device)
            else:
                log_masses = batch_log_masses(peft_model, encoder, [train_rows[i] for i in rows], the_device)
                loss = label_loss(log_masses, train_gold[rows].to(the_device), config.label_mass_weight)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, config.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["step"] += 1
        step = state["step"]
        if step % config.eval_interval == 0 or step == total_steps:
            latest_validation = evaluate()
            state["history"].append({"step": step, "loss": loss.item(), "validation_loss": latest_validation})
            if latest_validation < state["best_validation_loss"]:
                state.update(best_validation_loss=latest_validation, best_step=step, evaluations_without_gain=0)
                _save_adapter_dir(peft_model, output / BEST_DIR)
            else:
                state["evaluations_without_gain"] += 1
                stop = config.patience > 0 and state["evaluations_without_gain"] >= config.patience
        if step % config.checkpoint_interval == 0 and step < total_steps and not stop:
            _save_checkpoint(output / CHECKPOINT_DIR, run_key, peft_model, optimizer, scheduler, state)
        if on_step is not None:
            on_step(StepReport(step, total_steps, loss.item(), latest_validation,
                               state["best_validation_loss"] if math.isfinite(state["best_validation_loss"]) else None,
                               len(rows) / max(time.perf_counter() - started, 1e-9)))
    for name in ADAPTER_FILES:
        if (output / BEST_DIR / name).exists():
            shutil.copy(output / BEST_DIR / name, output / name)
    metadata = {
        "run_key": run_key,
        "finished": True,
        "config": config.to_dict(),
        "task": task.to_dict(),
        "task_fingerprint": task.fingerprint(),
        "base_model": {"id": model, "checksum": checksum},
        "target_modules": targets,
        "data": {"source": source, "n_items": len(data.texts)},
        **({"objective": objective.fingerprint()} if objective is not None else {}),
        "split": split.manifest,
        "training": {"steps": state["step"], "total_steps": total_steps, "best_step": state["best_step"],
                     "best_validation_loss": state["best_validation_loss"], "device": str(the_device),
                     "history": state["history"]},
    }
    write_metadata(output, metadata)
    return FinetuneResult(output, state["step"], state["best_step"], state["best_validation_loss"], resumed_from,
                          False, metadata)


def batch_indices(step: int, steps_per_epoch: int, n_rows: int, config: FinetuneConfig) -> list[int]:
    """The training rows of optimizer step ``step`` (0-based): each epoch is a seeded shuffle, so
    a resumed run needs only the step count to carry on in the same order."""
    epoch, position = divmod(step, steps_per_epoch)
    order = np.random.default_rng([config.seed, epoch]).permutation(n_rows)
    return order[position * config.batch_size:(position + 1) * config.batch_size].tolist()


def _run_key(task: Task, checksum: str, config: FinetuneConfig, manifest: dict[str, Any],
             objective: str | None = None) -> str:
    settings = config.to_dict()
    if not settings["label_mass_weight"]:  # absent at 0, so run keys of earlier versions stay as they were
        del settings["label_mass_weight"]
    parts = {"task": task.fingerprint(), "base": checksum, "config": settings,
             "train": manifest["train"]["items"]["hashes"], "validation": manifest["validation"]["items"]["hashes"]}
    if objective is not None:  # absent for the label loss, so its run keys stay as they were
        parts["objective"] = objective
    blob = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _refuse_foreign_output(output: Path) -> None:
    """Refuse an ``output`` that is a file, or a non-empty folder holding nothing a fine-tune
    wrote: training there would overwrite someone's files (``--no-resume`` included)."""
    if output.exists() and not output.is_dir():
        raise DataError(f"output {str(output)!r} is a file; give a folder for the adapter")
    if not output.is_dir() or not any(output.iterdir()):
        return
    ours = (METADATA_FILE, CHECKPOINT_DIR, BEST_DIR)
    if not any((output / name).exists() for name in ours):
        raise DataError(f"output folder {str(output)!r} holds files that no fine-tune wrote; "
                        "choose an empty or new folder")


def _clear_run(output: Path) -> None:
    """Remove what an earlier run wrote into ``output`` (only howsure's own files)."""
    for name in (CHECKPOINT_DIR, BEST_DIR, CHECKPOINT_DIR + ".staging", BEST_DIR + ".staging"):
        shutil.rmtree(output / name, ignore_errors=True)
    for name in (*ADAPTER_FILES, METADATA_FILE):
        (output / name).unlink(missing_ok=True)


def _replace_dir(staging: Path, target: Path) -> None:
    """Put ``staging`` at ``target``; the old one is removed only after the new one is complete."""
    old = target.with_name(target.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(staging, target)
    shutil.rmtree(old, ignore_errors=True)


def _save_adapter_dir(peft_model, target: Path) -> None:
    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    with quiet_peft():
        peft_model.save_pretrained(staging)
    _replace_dir(staging, target)


def _save_checkpoint(target: Path, run_key: str, peft_model, optimizer, scheduler, state: dict[str, Any]) -> None:
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    staging = target.with_name(target.name + ".staging")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()},
              str(staging / ADAPTER_WEIGHTS))
    rng = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save({"run_key": run_key, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": rng, "state": state}, staging / STATE_FILE)
    _replace_dir(staging, target)


def _load_checkpoint(source: Path, run_key: str, peft_model, optimizer, scheduler, device) -> dict[str, Any]:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    try:
        # weights_only: tensors, containers and numbers only, never arbitrary pickled objects
        # (the output directory is the user's: its file may not be ours).
        saved = torch.load(source / STATE_FILE, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or EOFError by cause
        raise ResumeError(f"cannot read the checkpoint {str(source / STATE_FILE)!r} ({exc.__class__.__name__}); "
                          "pass --no-resume to start over") from None
    if saved.get("run_key") != run_key:
        raise ResumeError(f"the checkpoint in {str(source.parent)!r} belongs to another run (other task, model, "
                          "data or settings); choose another --output or pass --no-resume to start over")
    set_peft_model_state_dict(peft_model, {k: v.to(device) for k, v in load_file(str(source / ADAPTER_WEIGHTS)).items()})
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    torch.set_rng_state(saved["rng"]["torch"])
    if "cuda" in saved["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["rng"]["cuda"])
    return saved["state"]
