"""LoRA adapters on disk: the base model's checksum, the target modules, loading an adapter onto
a base model for scoring (checked against the base model and task it was trained for), merging
it into a model directory, and the hashes of the texts it saw (for an overlap guard).

Imports no backend, so `TransformersBackend` can call `apply_adapter` while it loads."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from howsure.core.task import Task
from howsure.errors import DataError, ModelError, TaskError
from howsure.models import resolve_model

#: Module names whose linear children the default target covers: attention and MLP blocks.
BLOCK_SUFFIXES = (".self_attn", ".attn", ".attention", ".mlp")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")



METADATA_FILE = "howsure-finetune.json"
"""Written into every adapter directory (and copied into a merged model directory)."""
METADATA_FORMAT = 1


def write_metadata(directory: Path, metadata: dict[str, Any]) -> Path:
    """Write ``metadata`` as the directory's `METADATA_FILE` (atomically: a reader never sees half)."""
    path = Path(directory) / METADATA_FILE
    staging = path.with_suffix(".json.tmp")
    staging.write_text(json.dumps({"format": METADATA_FORMAT, **metadata}, indent=2, ensure_ascii=False), "utf-8")
    staging.replace(path)
    return path


def read_metadata(directory: str | Path) -> dict[str, Any]:
    """The `METADATA_FILE` of an adapter (or merged model) directory; `DataError` naming the
    directory when it has none or it cannot be read."""
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise DataError(
            f"{str(directory)!r} has no {METADATA_FILE}; expected a directory written by `howsure finetune`"
        )
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != METADATA_FORMAT:
        raise DataError(f"{str(path)!r} is not a format-{METADATA_FORMAT} howsure fine-tune metadata file")
    return data

def base_model_checksum(model: str) -> str:
    """sha256 over the base model's weight files (and config), whatever dtype it is loaded in:
    a preset's converted copy, a model directory, a ``.gguf`` file, or a hub id's cached files."""
    path, gguf_file = resolve_model(model)
    if gguf_file:
        files = [Path(path) / gguf_file]
    else:
        directory = Path(path)
        if not directory.is_dir():
            try:
                from huggingface_hub import snapshot_download

                directory = Path(snapshot_download(path, local_files_only=True))
            except Exception as exc:  # not cached: nothing local to checksum
                raise ModelError(f"cannot checksum model {model!r}: its files are not on this machine ({exc})") from exc
        files = sorted(p for p in directory.iterdir()
                       if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    return _files_checksum(tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


@functools.lru_cache(maxsize=16)
def _files_checksum(files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for name, _, _ in files:
        digest.update(Path(name).name.encode() + b"\0")
        with open(name, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return digest.hexdigest()


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Leaf names of every linear layer in ``model`` (q_proj, down_proj, lm_head ...), sorted."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear) and name})


def resolve_target_modules(model: torch.nn.Module, requested: Iterable[str] | None) -> list[str]:
    """The leaf names LoRA targets: ``requested`` checked against the model's linear layers
    (an unknown one is a `ModelError` naming it and listing them), or by default every linear
    projection inside the attention and MLP blocks."""
    available = linear_module_names(model)
    if requested is not None:
        for name in requested:
            if name not in available:
                raise ModelError(f"target module {name!r} is not a linear layer of this model; its linear "
                                 f"layers are: {', '.join(available)}")
        return list(dict.fromkeys(requested))
    default = sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                      if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[0].endswith(BLOCK_SUFFIXES)})
    if not default:
        raise ModelError(f"this model has no linear layers in attention or MLP blocks; name target modules "
                         f"from: {', '.join(available)}")
    return default


@contextlib.contextmanager
def quiet_peft() -> Iterator[None]:
    """Hide the one notice peft triggers in transformers 5 on every adapter load and save (its
    use of the deprecated ``is_gradient_checkpointing``): it says nothing about the user's run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


@dataclass(frozen=True)
class AdapterInfo:
    """What an adapter directory says about itself (its `METADATA_FILE`)."""

    directory: str
    base_model: str
    base_checksum: str
    task_name: str
    task_fingerprint: str
    metadata: dict[str, Any]

    def check_task(self, task: Task) -> None:
        """`TaskError` naming both tasks when ``task`` is not the one the adapter was trained for."""
        if task.fingerprint() != self.task_fingerprint:
            raise TaskError(
                f"adapter {self.directory!r} was trained for task {self.task_name!r} (fingerprint "
                f"{self.task_fingerprint}), not for task {task.name!r} (fingerprint {task.fingerprint()}); "
                "score with the task it was trained for"
            )


def adapter_info(directory: str | Path) -> AdapterInfo:
    """Read an adapter directory's metadata; `DataError` when it is not one."""
    data = read_metadata(directory)
    try:
        return AdapterInfo(str(directory), data["base_model"]["id"], data["base_model"]["checksum"],
                           data["task"]["name"], data["task_fingerprint"], data)
    except (KeyError, TypeError) as exc:
        raise DataError(f"{str(directory)!r}: {METADATA_FILE} lacks {exc}") from exc


def check_base_model(info: AdapterInfo, model: str) -> None:
    """`ModelError` naming both models when ``model`` is not the base the adapter was trained on."""
    checksum = base_model_checksum(model)
    if checksum != info.base_checksum:
        raise ModelError(
            f"adapter {info.directory!r} was trained on base model {info.base_model!r} (checksum "
            f"{info.base_checksum[:16]}), not on {model!r} (checksum {checksum[:16]}); load it onto its own base model"
        )


def apply_adapter(model: torch.nn.Module, adapter: str | Path, base_model: str) -> tuple[torch.nn.Module, AdapterInfo]:
    """Load ``adapter`` onto ``model`` (loaded from ``base_model``) and merge it into the weights,
    so every scoring fast path runs unchanged; returns the model and the adapter's info, whose
    `AdapterInfo.check_task` the scorer calls with its task."""
    from peft import PeftModel

    info = adapter_info(adapter)
    check_base_model(info, base_model)
    try:
        with quiet_peft():
            peft_model = PeftModel.from_pretrained(model, str(adapter))
            return peft_model.merge_and_unload(), info
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ModelError(f"could not load adapter {str(adapter)!r}: {exc}") from exc


def load_base_model(model: str, device: torch.device | str = "cpu"):
    """(tokenizer, float32 model) of ``model`` as the backend loads them, for training or merging."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path, gguf_file = resolve_model(model)
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **extra)
        loaded = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **extra)
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load model {model!r} from {path!r}: {exc}") from exc
    return tokenizer, loaded.to(device)


def check_merge_output(output: str | Path) -> Path:
    """``output`` as a Path if a merged model may be written there: a new or empty folder, or an
    earlier merge (it carries the adapter's metadata), which is replaced. Anything else is
    someone's files, and a `DataError`."""
    output = Path(output)
    if output.exists() and not output.is_dir():
        raise DataError(f"merge output {str(output)!r} is a file; give a folder for the merged model")
    if output.is_dir() and any(output.iterdir()) and not (output / METADATA_FILE).exists():
        raise DataError(f"merge output {str(output)!r} holds files that are no merged model from howsure; "
                        "choose an empty or new folder")
    return output


def merge_adapter(adapter: str | Path, output: str | Path, base_model: str | None = None) -> Path:
    """Write ``adapter`` merged into its base model as a model directory at ``output`` (that
    `howsure score --model OUTPUT` loads), with the adapter's metadata copied in; atomic."""
    output = check_merge_output(output)
    info = adapter_info(adapter)
    base_model = base_model or info.base_model
    tokenizer, model = load_base_model(base_model)
    merged, _ = apply_adapter(model, adapter, base_model)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=output.name + ".", dir=output.parent))
    try:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        shutil.copy(Path(adapter) / METADATA_FILE, staging / METADATA_FILE)
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return output


def trained_hashes(adapter_dir: str | Path) -> set[str]:
    """The fit-item hashes (`howsure.calibration.fitting.item_hashes` of the texts, key "text")
    of every item the adapter saw: its training split and its validation split (which chose
    the checkpoint). Calibrating, certifying or testing on any of them is not honest."""
    data = read_metadata(adapter_dir)
    try:
        parts = [data["split"]["train"]["items"], data["split"]["validation"]["items"]]
    except (KeyError, TypeError) as exc:
        raise DataError(f"{str(adapter_dir)!r}: {METADATA_FILE} has no split manifest ({exc})") from exc
    hashes: set[str] = set()
    for part in parts:
        if not isinstance(part, dict) or part.get("key") != "text":
            raise DataError(f"{str(adapter_dir)!r}: {METADATA_FILE} has a malformed split manifest")
        hashes.update(part["hashes"])
    return hashes
