"""Reviewed items as training data: the chat fine-tuning JSONL hosted APIs take, and the split of
the store's reviewed items into what a fine-tune may train on and what it must never see.

    write_chat_jsonl(rows, "train.jsonl")            # {"messages": [system, user, assistant]}
    selection = select_training_items(store)         # audited + certification items held out

What must stay out of training, so the next certificate is still honest: every audited item (the
random sample of automated items the guarantee is measured on), every item the active policy was
certified on (``policy.certified_on``), and the review items the next recalibration will draw into
its certification share (`howsure.decisions.recalibration.hash_share` below ``certify_share``, the
same draw `split_for_recalibration` makes with the same seed).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from howsure.backends.transformers.adapters import adapter_info, trained_hashes
from howsure.calibration.fitting import item_hashes
from howsure.core.task import Task
from howsure.decisions.policy import adapter_checksum
from howsure.decisions.recalibration import hash_share
from howsure.errors import DataError, PolicyError
from howsure.finetune.data import LabelledTexts
from howsure.service.feedback import recalibrate

if TYPE_CHECKING:
    from howsure.service.store import LabelledItem, PolicyRecord, ReviewStore

__all__ = ["ChatRow", "TrainingSelection", "certified_hashes", "chat_messages", "register_finetuned", "select_training_items", "store_chat_rows", "write_chat_jsonl"]


@dataclass(frozen=True)
class ChatRow:
    """One labelled text and the task whose prompt it is asked with."""

    task: Task
    text: str
    label: str


def chat_messages(task: Task, text: str, label: str) -> list[dict[str, str]]:
    """The chat a hosted fine-tuning API trains on for one item: a system message (the task's, or
    one naming the answers), the task's own prompt with ``text`` (few-shot turns included), and
    the label's first verbalizer (what howsure scores) as the assistant's answer."""
    if label not in task.labels:
        raise DataError(f"label {label!r} is not one of the task's labels {task.label_names}")
    answers = ", ".join(verbalizers[0] for verbalizers in task.labels.values())
    system = task.system or f"Classify the text. Answer with exactly one of: {answers}."
    turns = task.messages(text)
    if turns and turns[0]["role"] == "system":
        turns = turns[1:]
    return [{"role": "system", "content": system}, *turns, {"role": "assistant", "content": task.labels[label][0]}]


def write_chat_jsonl(rows: Iterable[ChatRow], path: str | Path) -> int:
    """Write one ``{"messages": [...]}`` line per row (JSON escaping: newlines, quotes and
    control characters in a text stay inside its string); returns the line count."""
    n = 0
    with Path(path).open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps({"messages": chat_messages(row.task, row.text, row.label)}, ensure_ascii=False) + "\n")
            n += 1
    return n


def store_chat_rows(store: "ReviewStore", *, policy_version: int | None = None,
                    include_audited: bool = False) -> list[ChatRow]:
    """The store's reviewed items as `ChatRow`s: the reviewer's label, the prompt of the task of
    the policy version that decided the item. Audited items only with ``include_audited``."""
    tasks: dict[int, Task] = {}
    rows = []
    for item in store.labelled_items(policy_version=policy_version):
        if item.source == "audit" and not include_audited:
            continue
        if item.policy_version not in tasks:
            body = store.get_policy(item.policy_version).body
            if not body.get("task"):
                raise PolicyError(f"policy version {item.policy_version} has no task, so its items have no prompt "
                                  "to export; export them as jsonl or csv instead")
            tasks[item.policy_version] = Task.from_dict(body["task"])
        rows.append(ChatRow(tasks[item.policy_version], item.text, item.label))
    return rows


@dataclass(frozen=True)
class TrainingSelection:
    """The store's reviewed items a fine-tune may train on, and why the others may not.

    ``data`` holds the trainable items' texts and reviewer labels; ``held_out`` counts the
    others by reason (``audit``, ``certified``: the active policy's certification items,
    ``certify_share``: review items the next certificate draws)."""

    data: "LabelledTexts"
    item_ids: list[int]
    held_out: dict[str, int]
    certify_share: float | None
    seed: int


def certified_hashes(body: dict[str, Any]) -> set[str]:
    """The text hashes of the items a stored policy body was certified on (empty when it does not
    record them: a policy certified from a file outside the store)."""
    certified = body.get("certified_on") or {}
    return set(certified.get("hashes") or []) if certified.get("key") == "text" else set()


def select_training_items(store: "ReviewStore", task: Task, *, certify_share: float | None, fit_share: float = 0.0,
                          seed: int = 0, labelled: Sequence["LabelledItem"] | None = None) -> TrainingSelection:
    """Split the store's reviewed items into trainable ones and held-out ones (module docstring).

    ``certify_share`` is the share of review items kept back for the next certificate (the
    lowest audit rate, as `howsure recalibrate` uses by default); None keeps none back.
    ``fit_share`` more of them are kept back to fit the next policy's calibrator (an item the
    model trained on looks surer than a new one, so a calibrator fitted on it is too)."""
    # Local for weight: howsure.finetune's package loads torch, which exporting never needs.

    active = store.active_policy()
    if active is None:
        raise PolicyError("the store has no active policy; fine-tuning from reviews needs one (howsure serve --policy)")
    certified = certified_hashes(active.body)
    items = list(store.labelled_items() if labelled is None else labelled)
    texts, labels, ids = [], [], []
    held_out = {"audit": 0, "certified": 0, "certify_share": 0, "calibration": 0}
    hashes = item_hashes([item.text for item in items], "text")
    for item, digest in zip(items, hashes):
        if item.source == "audit":
            held_out["audit"] += 1
        elif digest in certified:
            held_out["certified"] += 1
        elif hash_share(item.item_id, seed) < (certify_share or 0.0):
            held_out["certify_share"] += 1
        elif hash_share(item.item_id, seed) < (certify_share or 0.0) + fit_share:
            held_out["calibration"] += 1
        elif item.label not in task.labels:
            raise DataError(f"item {item.item_id} was labelled {item.label!r}, not one of the task's labels "
                            f"{task.label_names}")
        else:
            texts.append(item.text)
            labels.append(item.label)
            ids.append(item.item_id)
    # A text held out under one id must not come back in training under another.
    trainable = set(ids)
    blocked = {d for item, d in zip(items, hashes) if item.item_id not in trainable}
    keep = [k for k, d in enumerate(item_hashes(texts, "text")) if d not in blocked]
    held_out["duplicate_of_held_out"] = len(texts) - len(keep)
    return TrainingSelection(LabelledTexts([texts[k] for k in keep], [labels[k] for k in keep]),
                             [ids[k] for k in keep], held_out, certify_share, seed)


def register_finetuned(store: "ReviewStore", adapter_dir: str | Path, *, task: Task, model: str,
                       rescore: Callable[[list[str]], Any], actor: str, **recalibrate_options: Any,
                       ) -> tuple["PolicyRecord", dict[str, Any]]:
    """Add the fine-tuned model as a new policy version: every reviewed item the adapter did not
    train on is scored again through it (``rescore(texts)``: raw probabilities in the task's label
    order), the calibrator is fitted and the threshold certified on them exactly as
    `howsure.service.feedback.recalibrate` does, and the policy records the adapter (directory
    and weight checksum). ``recalibrate_options`` go to `recalibrate` (seed, calibrator, ...)."""
    # Local for weight: the adapters module loads torch, which exporting and selecting never need.

    adapter_info(adapter_dir).check_task(task)
    directory = str(Path(adapter_dir).resolve())
    adapter = {"directory": directory, "checksum": adapter_checksum(directory)}
    trained = trained_hashes(directory)
    note = recalibrate_options.pop("note", None) or f"fine-tuned adapter {directory} ({len(trained)} texts trained on)"
    return recalibrate(store, actor=actor, rescore=rescore, adapter=adapter, trained=trained, model_id=model,
                       note=note, **recalibrate_options)
