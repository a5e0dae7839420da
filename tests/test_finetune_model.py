"""End to end on the bundled model: a few LoRA steps on SST-2 training rows change its scores."""

from __future__ import annotations

import math

import numpy as np
import pytest

from howsure.finetune import FinetuneConfig, finetune, read_labelled_file
from howsure.finetune.data import LabelledTexts
from howsure.core.task import load_task

pytestmark = pytest.mark.model


def test_a_few_steps_on_sst2_train_give_an_adapter_that_moves_the_bundled_models_scores(
        bundled_model_ready, shared_data, tmp_path):
    import torch

    from howsure.backends.transformers import TransformersBackend

    torch.set_num_threads(2)
    task = load_task("sentiment")
    rows = read_labelled_file(shared_data / "sentiment" / "sst2" / "train.tsv", task, "sentence", "label",
                              {"0": "negative", "1": "positive"})
    data = LabelledTexts(rows.texts[:80], rows.labels[:80])
    result = finetune(task, data, tmp_path / "adapter", model=bundled_model_ready,
                      config=FinetuneConfig(max_steps=2, batch_size=8, eval_interval=2, learning_rate=1e-3))
    assert result.steps == 2 and math.isfinite(result.best_validation_loss)
    texts = ["a gorgeous, witty film", "dull and stupid from start to finish"]
    adapted = TransformersBackend(bundled_model_ready, adapter=str(tmp_path / "adapter"), threads=2)
    after = np.array([s.probabilities for s in adapted.label_scores(task, texts)])
    before = np.array([s.probabilities for s in TransformersBackend(bundled_model_ready, threads=2).label_scores(task, texts)])
    assert np.abs(after - before).max() > 1e-4
