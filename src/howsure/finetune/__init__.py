"""LoRA fine-tuning on the task's own prompt, with the loss on the labels' probabilities exactly
as howsure scores them: config, data split, loss, trainer, adapters (load, merge, trained hashes)."""

from howsure.backends.transformers.adapters import (
    AdapterInfo, adapter_info, apply_adapter, base_model_checksum, merge_adapter, resolve_target_modules,
    trained_hashes,
)
from howsure.backends.transformers.adapters import METADATA_FILE
from howsure.finetune.config import FinetuneConfig
from howsure.finetune.data import LabelledTexts, TrainValidationSplit, read_labelled_file, split_train_validation
from howsure.finetune.trainer import FinetuneResult, StepReport, finetune

__all__ = [
    "AdapterInfo", "FinetuneConfig", "FinetuneResult", "LabelledTexts", "METADATA_FILE", "StepReport",
    "TrainValidationSplit", "adapter_info", "apply_adapter", "base_model_checksum", "finetune", "merge_adapter",
    "read_labelled_file", "resolve_target_modules", "split_train_validation", "trained_hashes",
]
