"""LoRA fine-tuning: config, content-hash split, the answer-position loss, the shared-prefix
forward with gradients, adapters (scores, merge, checks), resume after an interruption."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from howsure.calibration.fitting import item_hashes
from howsure.errors import DataError, ModelError, ResumeError, TaskError
from howsure.finetune import (
    FinetuneConfig, LabelledTexts, adapter_info, finetune, merge_adapter, read_labelled_file,
    resolve_target_modules, split_train_validation, trained_hashes,
)
from howsure.backends.transformers.adapters import load_base_model
from howsure.backends.transformers.adapters import METADATA_FILE
from howsure.finetune.forward import PromptEncoder, batch_log_probs
from howsure.finetune.loss import answer_position_loss, label_log_masses, label_log_probs, label_loss
from howsure.backends.labels import build_label_vocabulary, label_scores_from_probs
from howsure.core.task import load_task, Task

SENTIMENT = load_task("sentiment")
# Multi-token verbalizers ("very good" is two tokens of the tiny tokenizer) exercise the chain rule.
MULTI = Task(instruction="Review: {text}\nSentiment?", labels={"positive": ["very good", "positive"],
                                                               "negative": ["quite bad"]}, name="multi")


def toy_data(n: int = 60) -> LabelledTexts:
    texts = [f"a good witty movie number {i}" if i % 2 else f"the worst dull film {i}" for i in range(n)]
    return LabelledTexts(texts, ["positive" if i % 2 else "negative" for i in range(n)])


SMALL = dict(batch_size=8, eval_interval=2, checkpoint_interval=2, validation_fraction=0.2, patience=0)


# ---------------------------------------------------------------------------------- config
def test_config_defaults_round_trip_through_json_and_reject_bad_values():
    config = FinetuneConfig()
    assert (config.rank, config.alpha, config.dropout, config.learning_rate, config.batch_size) == (8, 16.0, 0.05, 2e-4, 16)
    again = FinetuneConfig.from_dict(json.loads(json.dumps(FinetuneConfig(target_modules=["q_proj"]).to_dict())))
    assert again == FinetuneConfig(target_modules=("q_proj",))
    with pytest.raises(DataError, match="rank must be a whole number >= 1, got 0"):
        FinetuneConfig(rank=0)
    with pytest.raises(DataError, match=r"validation_fraction must be a number in \(0, 1\), got 1.5"):
        FinetuneConfig(validation_fraction=1.5)
    with pytest.raises(DataError, match="unknown fine-tune setting 'ranks'"):
        FinetuneConfig.from_dict({"ranks": 4})


# ---------------------------------------------------------------------------------- data
def test_split_is_by_content_hash_and_keeps_duplicates_on_one_side():
    base = toy_data(200)
    doubled = LabelledTexts(base.texts + base.texts[:50], base.labels + base.labels[:50])
    split = split_train_validation(doubled, SENTIMENT, 0.3)
    train, validation = set(split.train.texts), set(split.validation.texts)
    assert not train & validation
    assert len(split.train.texts) + len(split.validation.texts) == 250
    assert 0.15 < len(validation) / 200 < 0.45
    # The side of a text does not depend on the other texts.
    alone = split_train_validation(LabelledTexts(base.texts[::-1], base.labels[::-1]), SENTIMENT, 0.3)
    assert set(alone.validation.texts) == validation
    assert split.manifest["train"]["items"]["hashes"] == sorted(set(item_hashes(split.train.texts, "text")))
    assert split.manifest["validation"]["per_label"] == {
        label: split.validation.labels.count(label) for label in SENTIMENT.label_names}


def test_a_label_without_training_examples_is_named():
    data = LabelledTexts([f"text {i}" for i in range(30)], ["positive"] * 30)
    with pytest.raises(DataError, match="label 'negative' has no example in the training split"):
        split_train_validation(data, SENTIMENT, 0.2)


def test_a_training_file_without_the_label_column_names_the_columns(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("sentence\tgold\nnice\t1\n", "utf-8")
    with pytest.raises(DataError, match="has no label column 'label'; columns are: sentence, gold"):
        read_labelled_file(path, SENTIMENT, "sentence", "label")
    with pytest.raises(DataError, match=r"label '1', which is not one of the task's labels \['positive', 'negative'\]"):
        read_labelled_file(path, SENTIMENT, "sentence", "gold")
    rows = read_labelled_file(path, SENTIMENT, "sentence", "gold", {"1": "positive"})
    assert (rows.texts, rows.labels) == (["nice"], ["positive"])


# ---------------------------------------------------------------------------------- loss
def test_only_the_answer_position_receives_gradient_whatever_the_prompt_targets(tiny_model_dir):
    tokenizer, _ = load_base_model(str(tiny_model_dir))
    vocab = build_label_vocabulary(Task(instruction="{text}", labels={"yes": ["positive"], "no": ["negative"]}), tokenizer)
    assert not vocab.has_sequences
    logits = torch.randn(3, 7, len(tokenizer), requires_grad=True)
    gold = torch.tensor([0, 1, 0])
    answer_position_loss(logits, gold, vocab).backward()
    grad = logits.grad
    assert grad[:, -1].abs().sum() > 0
    assert torch.count_nonzero(grad[:, :-1]) == 0
    # A causal-LM loss on the prompt tokens' next-token targets moves the earlier positions;
    # ours has no such targets, so changing them (here: adding that loss and taking it away)
    # leaves the gradient exactly as it was.
    targets = torch.randint(0, len(tokenizer), (3, 6))
    logits.grad = None
    (answer_position_loss(logits, gold, vocab)
     + 0 * torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]), targets.reshape(-1))).backward()
    assert torch.equal(logits.grad, grad)


def test_label_log_probs_match_howsure_scoring_with_multi_token_labels(tiny_model_dir):
    tokenizer, _ = load_base_model(str(tiny_model_dir))
    vocab = build_label_vocabulary(MULTI, tokenizer)
    assert vocab.has_sequences
    generator = torch.Generator().manual_seed(0)
    next_log_probs = torch.randn(4, len(tokenizer), generator=generator, dtype=torch.float64).log_softmax(-1)
    sequence_log_probs = torch.rand(4, len(vocab.all_sequences), generator=generator, dtype=torch.float64).log() - 3
    ours = label_log_probs(next_log_probs, vocab, sequence_log_probs).exp().numpy()
    scored = label_scores_from_probs(vocab, next_log_probs.exp().numpy(), sequence_log_probs.exp().numpy())
    np.testing.assert_allclose(ours, np.array([s.probabilities for s in scored]), atol=1e-12)


def test_label_mass_weight_adds_the_labels_total_mass_and_at_one_is_the_whole_vocabulary_loss(tiny_model_dir):
    tokenizer, _ = load_base_model(str(tiny_model_dir))
    vocab = build_label_vocabulary(MULTI, tokenizer)
    generator = torch.Generator().manual_seed(1)
    next_log_probs = torch.randn(5, len(tokenizer), generator=generator, dtype=torch.float64).log_softmax(-1)
    sequence_log_probs = torch.rand(5, len(vocab.all_sequences), generator=generator, dtype=torch.float64).log() - 3
    gold = torch.tensor([0, 1, 1, 0, 1])
    log_masses = label_log_masses(next_log_probs, vocab, sequence_log_probs)
    # Brute force from the scorer's own masses: a label's mass over the whole vocabulary.
    scored = label_scores_from_probs(vocab, next_log_probs.exp().numpy(), sequence_log_probs.exp().numpy())
    masses = np.array([s.label_mass for s in scored])
    np.testing.assert_allclose(log_masses.exp().numpy(), masses, rtol=1e-12)
    gold_mass = masses[np.arange(5), gold.numpy()]
    normalised_ce = -np.log(gold_mass / masses.sum(1)).mean()
    assert float(label_loss(log_masses, gold)) == pytest.approx(normalised_ce, rel=1e-12)
    assert float(label_loss(log_masses, gold, 1.0)) == pytest.approx(-np.log(gold_mass).mean(), rel=1e-12)
    assert float(label_loss(log_masses, gold, 0.5)) == pytest.approx(
        normalised_ce - 0.5 * np.log(masses.sum(1)).mean(), rel=1e-12)
    with pytest.raises(DataError, match="label_mass_weight must be a number >= 0, got -1"):
        FinetuneConfig(label_mass_weight=-1)


def test_training_with_label_mass_weight_keeps_the_model_answering_with_a_label(tiny_model_dir, tmp_path):
    """The normalised loss leaves the labels' total mass wherever it drifts; with weight 1 the
    same run raises it. Same data, steps and seed, only the weight differs."""
    from howsure.backends.transformers import TransformersBackend

    texts = toy_data(16).texts
    base = TransformersBackend(str(tiny_model_dir), threads=1).label_scores(SENTIMENT, texts)
    totals = {"base": np.median([s.label_mass.sum() for s in base])}
    for weight in (0.0, 1.0):
        output = tmp_path / f"w{weight}"
        finetune(SENTIMENT, toy_data(), output, model=str(tiny_model_dir),
                 config=FinetuneConfig(max_steps=6, learning_rate=5e-3, label_mass_weight=weight, **SMALL))
        tuned = TransformersBackend(str(tiny_model_dir), adapter=str(output), threads=1).label_scores(SENTIMENT, texts)
        totals[weight] = np.median([s.label_mass.sum() for s in tuned])
    assert totals[1.0] > 5 * totals["base"], totals
    assert totals[1.0] > 5 * totals[0.0], totals


# ---------------------------------------------------------------------------------- forward
@pytest.mark.parametrize("task", [SENTIMENT, MULTI], ids=["single-token", "multi-token"])
def test_shared_prefix_gives_the_loss_and_gradients_of_the_full_prompt(tiny_model_dir, task):
    from peft import LoraConfig, get_peft_model

    tokenizer, base = load_base_model(str(tiny_model_dir))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=resolve_target_modules(base, None)))
    for name, parameter in model.named_parameters():  # lora_B starts at zero: make it matter
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    texts = toy_data(6).texts + ["short", "a much longer text about a witty seductive movie of the year"]
    gold = torch.tensor([i % 2 for i in range(len(texts))])
    results = []
    for share in (True, False):
        encoder = PromptEncoder(tokenizer, task, share_prefix=share)
        rows = encoder.rows(texts, 256)
        assert all(r.shares_prefix for r in rows) == share
        model.zero_grad()
        log_probs = batch_log_probs(model, encoder, rows, torch.device("cpu"))
        loss = -log_probs.gather(1, gold.view(-1, 1)).mean()
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((log_probs.detach(), grads))
    (shared, shared_grads), (whole, whole_grads) = results
    torch.testing.assert_close(shared, whole, atol=1e-5, rtol=0)
    assert any(g.abs().sum() > 0 for g in shared_grads.values())
    for name in whole_grads:
        torch.testing.assert_close(shared_grads[name], whole_grads[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("task", [SENTIMENT, MULTI], ids=["single-token", "multi-token"])
def test_packed_rows_give_what_each_row_alone_gives(tiny_model_dir, task, monkeypatch):
    """Rows packed into shared sequences (several packs, padded to the longest) attend only to
    the prefix and themselves: each row's log probabilities and its gradient equal those of
    the row run alone."""
    from peft import LoraConfig, get_peft_model

    from howsure.finetune import forward

    tokenizer, base = load_base_model(str(tiny_model_dir))
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                                            target_modules=resolve_target_modules(base, None)))
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.5)
    texts = toy_data(5).texts + ["short", "a much longer text about a witty seductive movie of the year"]
    encoder = PromptEncoder(tokenizer, task)
    rows = encoder.rows(texts, 256)
    monkeypatch.setattr(forward, "PACK_TOKENS", 12)  # several packs of unequal length
    model.zero_grad()
    packed = batch_log_probs(model, encoder, rows, torch.device("cpu"))
    packed[:, 0].sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    alone = torch.cat([batch_log_probs(model, encoder, [row], torch.device("cpu")) for row in rows])
    alone[:, 0].sum().backward()
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=0)
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(packed_grads[name], parameter.grad, atol=1e-5, rtol=1e-4)


def test_an_unknown_target_module_is_named_with_the_models_linear_layers(tiny_model_dir):
    _, base = load_base_model(str(tiny_model_dir))
    assert resolve_target_modules(base, None) == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj",
                                                  "v_proj"]
    with pytest.raises(ModelError, match="target module 'qkv' is not a linear layer of this model; its linear "
                                         "layers are: down_proj, gate_proj, k_proj, lm_head, o_proj"):
        resolve_target_modules(base, ["q_proj", "qkv"])


# ---------------------------------------------------------------------------------- training, adapters
@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("adapter")
    result = finetune(SENTIMENT, toy_data(), output, model=str(tiny_model_dir),
                      config=FinetuneConfig(max_steps=6, learning_rate=5e-3, **SMALL))
    return output, result


def test_training_writes_the_best_adapter_and_its_metadata(trained, tiny_model_dir):
    output, result = trained
    metadata = json.loads((output / METADATA_FILE).read_text())
    history = metadata["training"]["history"]
    assert [h["step"] for h in history] == [2, 4, 6]
    best = min(history, key=lambda h: h["validation_loss"])
    assert (result.best_step, result.best_validation_loss) == (best["step"], best["validation_loss"])
    assert metadata["config"] == FinetuneConfig(max_steps=6, learning_rate=5e-3, **SMALL).to_dict()
    assert metadata["task_fingerprint"] == SENTIMENT.fingerprint()
    assert metadata["base_model"]["id"] == str(tiny_model_dir)
    assert len(metadata["base_model"]["checksum"]) == 64
    split = split_train_validation(toy_data(), SENTIMENT, 0.2)
    assert trained_hashes(output) == set(item_hashes(split.train.texts + split.validation.texts, "text"))
    assert (output / "adapter_model.safetensors").read_bytes() == (output / "best" / "adapter_model.safetensors").read_bytes()


def test_adapter_scores_equal_merged_model_scores_and_the_training_probabilities(trained, tiny_model_dir, tmp_path):
    from peft import PeftModel

    from howsure.backends.transformers import TransformersBackend

    output, _ = trained
    texts = toy_data(10).texts + ["something else entirely"]
    adapted = TransformersBackend(str(tiny_model_dir), adapter=str(output), threads=1).label_scores(SENTIMENT, texts)
    merged_dir = merge_adapter(output, tmp_path / "merged")
    assert json.loads((merged_dir / METADATA_FILE).read_text())["task_fingerprint"] == SENTIMENT.fingerprint()
    merged = TransformersBackend(str(merged_dir), threads=1).label_scores(SENTIMENT, texts)
    base = TransformersBackend(str(tiny_model_dir), threads=1).label_scores(SENTIMENT, texts)
    probabilities = np.array([s.probabilities for s in adapted])
    np.testing.assert_allclose(probabilities, np.array([s.probabilities for s in merged]), atol=1e-5)
    assert np.abs(probabilities - np.array([s.probabilities for s in base])).max() > 1e-3  # the adapter matters
    # Save/load round trip through peft, unmerged: the trainer's own forward gives the same.
    tokenizer, model = load_base_model(str(tiny_model_dir))
    model = PeftModel.from_pretrained(model, str(output)).eval()
    encoder = PromptEncoder(tokenizer, SENTIMENT)
    with torch.no_grad():
        trained_probs = batch_log_probs(model, encoder, encoder.rows(texts, 256), torch.device("cpu")).exp().numpy()
    np.testing.assert_allclose(trained_probs, probabilities, atol=1e-5)


def test_an_adapter_refuses_another_task_or_base_model(trained, tiny_model_dir, tiny_plain_model_dir):
    from howsure.backends.transformers import TransformersBackend

    output, _ = trained
    backend = TransformersBackend(str(tiny_model_dir), adapter=str(output), threads=1)
    with pytest.raises(TaskError, match=r"was trained for task 'sentiment' \(fingerprint [0-9a-f]{16}\), not for task 'multi'"):
        backend.label_scores(MULTI, ["text"])
    with pytest.raises(ModelError, match=f"was trained on base model '{tiny_model_dir}'.*not on '{tiny_plain_model_dir}'"):
        TransformersBackend(str(tiny_plain_model_dir), adapter=str(output))
    assert adapter_info(output).task_name == "sentiment"


def _adapter_tensors(directory):
    from safetensors.torch import load_file

    return load_file(str(directory / "adapter_model.safetensors"))


def test_an_interrupted_run_resumes_to_the_same_adapter(tiny_model_dir, tmp_path):
    config = FinetuneConfig(max_steps=7, learning_rate=5e-3, **SMALL)  # checkpoints at 2, 4, 6
    whole = finetune(SENTIMENT, toy_data(), tmp_path / "whole", model=str(tiny_model_dir), config=config)

    def crash(report):
        if report.step == 5:  # after the step-4 checkpoint: step 5 is lost and redone
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(SENTIMENT, toy_data(), tmp_path / "cut", model=str(tiny_model_dir), config=config, on_step=crash)
    assert not (tmp_path / "cut" / METADATA_FILE).exists()
    resumed = finetune(SENTIMENT, toy_data(), tmp_path / "cut", model=str(tiny_model_dir), config=config)
    assert resumed.resumed_from == 4 and resumed.steps == 7
    expected, got = _adapter_tensors(tmp_path / "whole"), _adapter_tensors(tmp_path / "cut")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-5, rtol=0)
    assert resumed.metadata["training"]["history"] == whole.metadata["training"]["history"]
    again = finetune(SENTIMENT, toy_data(), tmp_path / "cut", model=str(tiny_model_dir), config=config)
    assert again.already_finished and again.steps == 7
    with pytest.raises(ResumeError, match="holds an adapter from another run"):
        finetune(SENTIMENT, toy_data(), tmp_path / "cut", model=str(tiny_model_dir),
                 config=FinetuneConfig(max_steps=8, **SMALL))
    fresh = finetune(SENTIMENT, toy_data(), tmp_path / "cut", model=str(tiny_model_dir), config=config, resume=False)
    assert fresh.resumed_from is None and not fresh.already_finished


def test_early_stopping_keeps_the_best_checkpoint(tiny_model_dir, tmp_path):
    # A learning rate this large makes validation loss jump about; patience 1 stops at the first rise.
    config = FinetuneConfig(max_steps=40, learning_rate=0.5, patience=1, batch_size=8, eval_interval=1,
                            checkpoint_interval=100, validation_fraction=0.2)
    result = finetune(SENTIMENT, toy_data(), tmp_path / "out", model=str(tiny_model_dir), config=config)
    history = result.metadata["training"]["history"]
    assert result.steps < 40 and result.steps == history[-1]["step"]
    assert history[-1]["validation_loss"] >= result.best_validation_loss
    assert result.best_validation_loss == min(h["validation_loss"] for h in history)
    assert math.isfinite(result.best_validation_loss)


def test_low_label_mass_through_an_adapter_is_explained_not_blamed_on_the_prompt(trained, tiny_model_dir, tmp_path):
    """The label loss is normalised over the labels, so an adapter may leave them a small share of
    the vocabulary: scoring through it warns with that reason, not "check the prompt"."""
    from howsure.backends.labels import LowLabelMassWarning
    from howsure.backends.transformers import TransformersBackend
    from howsure.io.texts import TextRows
    from howsure.pipelines.score_job import score_rows

    output, _ = trained
    texts = toy_data(6).texts
    rows = TextRows(list(range(6)), texts, [str(i) for i in range(6)], [None] * 6)
    messages = {}
    for name, adapter in (("base", None), ("adapter", str(output))):
        backend = TransformersBackend(str(tiny_model_dir), adapter=adapter, threads=1)
        with pytest.warns(LowLabelMassWarning) as caught:  # the tiny random model: almost no label mass
            score_rows(backend, SENTIMENT, rows, tmp_path / f"{name}.jsonl")
        messages[name] = str(caught[0].message)
    assert "check the prompt" in messages["base"] and "howsure finetune" not in messages["base"]
    assert "LoRA adapter from `howsure finetune`" in messages["adapter"] and "check the prompt" not in messages["adapter"]
