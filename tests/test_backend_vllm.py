"""The vLLM backend without vLLM: the import guard and its error, and the conversion of
vLLM-shaped logprob outputs into `LabelScores`, fed with logprobs computed by a plain
transformers model and compared with the transformers backend on the same prompts. The real
engine is checked by the `cuda` test (and bench/bench_vllm.py) on a GPU machine."""

from __future__ import annotations

import importlib
import sys
from collections import namedtuple

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.backends import BACKENDS, load_backend
from howsure.backends import vllm as vllm_backend
from howsure.cli import app
from howsure.core.task import load_task
from howsure.errors import ModelError

pytestmark = pytest.mark.filterwarnings("ignore::howsure.backends.labels.LowLabelMassWarning")

#: vllm.logprobs.Logprob's fields; the conversion reads ``.logprob`` only.
Logprob = namedtuple("Logprob", "logprob rank decoded_token")
TEXTS = ["A gorgeous, witty, seductive movie.", "The worst film of the year, dull and stupid.",
         "very good", "quite bad, not sure", "Is it positive or negative?", "maybe"]
SEQUENCE_TASK = {"instruction": "Review: {text}\nAnswer:", "variant_rule": "exact",
                 "labels": {"good": ["very good"], "bad": ["quite bad", "bad"]}}


@pytest.fixture(scope="module")
def reference(tiny_model_dir):
    """A plain transformers model (none of howsure's fast paths) and its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def log_probs(model, ids):
    """log p(next token | ids[:j + 1]) for every position j, shape (len(ids), vocab)."""
    import torch

    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].double().log_softmax(-1).numpy()


def vllm_like(model, tokenizer, task, k=vllm_backend.NEXT_LOGPROBS):
    """What VLLMBackend.label_scores gets back from vLLM, computed by ``model``: the top ``k``
    next-token logprobs per prompt, then the prompt logprobs of each appended sequence."""
    vocab = vllm_backend.task_vocabulary(tokenizer, task)
    nexts, extras, appended = [], [], []
    for text in TEXTS:
        ids = vllm_backend.prompt_ids(tokenizer, task, text)
        last = log_probs(model, ids)[-1]
        top = np.argsort(-last)[:k]
        nexts.append({int(t): Logprob(float(last[t]), rank + 1, tokenizer.decode([int(t)])) for rank, t in enumerate(top)})
        extra = {}
        for seq in vllm_backend.extra_requests(vocab, nexts[-1]):
            whole = ids + list(seq)
            table = log_probs(model, whole)
            # prompt_logprobs=0: the token at each position only; the first position has none.
            prompt_logprobs = [None] + [{whole[j]: Logprob(float(table[j - 1, whole[j]]), 0, "")}
                                        for j in range(1, len(whole))]
            extra[seq] = vllm_backend.appended_logprob(prompt_logprobs, len(ids), seq)
            appended.append(seq)
        extras.append(extra)
    return vocab, nexts, extras, appended


@pytest.mark.parametrize("task_source", ["sentiment", SEQUENCE_TASK], ids=["variants", "exact-sequences"])
def test_vllm_logprobs_give_the_transformers_backends_scores(reference, tiny_model_dir, task_source):
    model, tokenizer = reference
    task = load_task(task_source)
    vocab, nexts, extras, appended = vllm_like(model, tokenizer, task)
    if vocab.has_sequences:
        assert any(len(seq) > 1 for seq in appended)  # the chain rule over several tokens ran
    else:
        assert any(len(seq) == 1 for seq in appended)  # label tokens outside the top k were fetched
    got = vllm_backend.label_scores_from_vllm(vocab, len(tokenizer), nexts, extras, top_k=10,
                                              decode=lambda t: tokenizer.decode([t]))
    want = load_backend(str(tiny_model_dir)).label_scores(task, TEXTS, top_k=10)
    for g, w in zip(got, want):
        assert g.labels == w.labels
        np.testing.assert_allclose(g.label_mass, w.label_mass, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(g.probabilities, w.probabilities, atol=1e-5)
        assert [t for t, _ in g.top_tokens] == [t for t, _ in w.top_tokens]
        np.testing.assert_allclose([p for _, p in g.top_tokens], [p for _, p in w.top_tokens], atol=1e-6)


def test_too_few_logprobs_is_an_error(reference):
    model, tokenizer = reference
    task = load_task("sentiment")
    vocab, nexts, extras, _ = vllm_like(model, tokenizer, task, k=5)
    with pytest.raises(ModelError, match="returned 5 next-token logprobs, fewer than top_k = 10"):
        vllm_backend.label_scores_from_vllm(vocab, len(tokenizer), nexts, extras, top_k=10)
    with pytest.raises(ModelError, match="no prompt logprob for token 7 at position 3"):
        vllm_backend.appended_logprob([None, {1: Logprob(-1.0, 1, "")}, {2: Logprob(-1.0, 1, "")}, None], 3, (7,))


def test_import_guard_and_install_message(monkeypatch, tmp_path):
    assert BACKENDS["vllm"] == "howsure.backends.vllm:VLLMBackend"
    monkeypatch.setitem(sys.modules, "vllm", None)  # what `import vllm` meets where it is not installed
    importlib.reload(vllm_backend)  # the module itself needs no vLLM
    with pytest.raises(ModelError, match=r"needs vLLM, which is not installed.*CUDA GPU.*pip install vllm"):
        load_backend("smollm2-135m", "vllm")
    source = tmp_path / "texts.csv"
    source.write_text("text\nfine\n")
    result = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "o.jsonl"), "--backend", "vllm"])
    assert result.exit_code == 2
    assert "needs vLLM, which is not installed" in " ".join(result.output.split())
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.cuda
def test_real_vllm_agrees_with_transformers(bundled_model_ready):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    pytest.importorskip("vllm", reason="vLLM is installed by hand on a CUDA machine (docs/backends.md)")
    task = load_task("sentiment")
    got = load_backend(bundled_model_ready, "vllm").label_scores(task, TEXTS, top_k=10)
    want = load_backend(bundled_model_ready, device="cpu").label_scores(task, TEXTS, top_k=10)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.probabilities, w.probabilities, atol=0.02)
        assert g.prediction == w.prediction
