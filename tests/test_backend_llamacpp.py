"""The llama.cpp backend (howsure.backends.llamacpp) on the bundled GGUF, in-process.

It must see the transformers backend's prompts token for token, read the answer position's
logits (the only ones llama.cpp keeps with logits_all off), and agree with the transformers
backend within 0.05 on 99 % of 200 SST-2 dev texts, although the two compute differently:
llama.cpp runs the Q4_1 weights as they are (8-bit activations), transformers dequantises them
to float32.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from howsure.backends import load_backend
from howsure.backends.llamacpp_cpu import load_llama
from howsure.cli import app
from howsure.core.task import Task, load_task
from howsure.errors import ModelError

pytestmark = pytest.mark.model
llama_cpp = pytest.importorskip("llama_cpp")  # a failure in CI, where make test installs it


@pytest.fixture(scope="module")
def task():
    return load_task("sentiment")


@pytest.fixture(scope="module")
def llama_backend(bundled_model_ready):
    return load_backend(bundled_model_ready, "llamacpp", threads=2)


@pytest.fixture(scope="module")
def sst2_dev():
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"
    if not path.exists():
        pytest.skip(f"{path} not found (../shared beside the checkout)")
    return pd.read_csv(path, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()


def test_prompts_and_label_tokens_are_the_transformers_backends(llama_backend, bundled_backend, task, sst2_dev):
    for text in sst2_dev[:20] + ["ünïcode, emoji 🎬 and <b>markup</b>"]:
        assert llama_backend.prompt(task, text) == bundled_backend.prompt(task, text)
        assert llama_backend.encode(llama_backend.prompt(task, text)) == bundled_backend.encode(
            bundled_backend.prompt(task, text))
    ours, theirs = llama_backend.prepare(task), bundled_backend.prepare(task)
    assert ours.prefix_ids == theirs.prefix_ids and len(ours.prefix_ids) > 10
    assert [ids.tolist() for ids in ours.vocab.token_ids] == [ids.tolist() for ids in theirs.vocab.token_ids]
    variants = Task(instruction="Sentiment? {text}", labels={"positive": ["positive"], "negative": ["negative"]},
                    variant_rule="variants")
    assert ([ids.tolist() for ids in llama_backend.prepare(variants).vocab.token_ids]
            == [ids.tolist() for ids in bundled_backend.prepare(variants).vocab.token_ids])


def test_agrees_with_transformers_within_0_05_on_99_percent_of_200_sst2_dev_texts(llama_backend, bundled_backend, task, sst2_dev):
    texts = sst2_dev[:200]
    ours = np.array([s.probabilities for s in llama_backend.label_scores(task, texts)])
    theirs = np.array([s.probabilities for s in bundled_backend.label_scores(task, texts)])
    difference = np.abs(ours - theirs)[:, 0]
    same_argmax = float(np.mean(ours.argmax(1) == theirs.argmax(1)))
    # docs/backends.md quotes these (the two dequantise differently).
    print(f"\nllama.cpp vs transformers float32, 200 SST-2 dev texts: max |dp| {difference.max():.4f}, "
          f"mean {difference.mean():.4f}, same argmax {same_argmax:.1%}")
    # The 0.05 holds for all but one or two texts: llama.cpp multiplies Q4_1 blocks with
    # 8-bit activations, transformers dequantised float32; no llama.cpp setting that keeps the
    # GGUF closes it (docs/scripts/llamacpp_agreement.py, docs/backends.md).
    assert np.mean(difference < 0.05) >= 0.99
    assert difference.max() < 0.06 and difference.mean() < 0.02
    assert same_argmax >= 0.95


def _last_position_logits(llm, ids):
    llm.reset()
    llm.eval(ids)
    return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(llm.n_vocab(),)).copy()


def test_with_logits_all_off_only_the_answer_position_has_logits_and_that_is_the_one_read(
        llama_backend, task, sst2_dev):
    ids = llama_backend.encode(llama_backend.prompt(task, sst2_dev[0]))
    every = load_llama(str(llama_backend.path), n_ctx=512, logits_all=True, verbose=False, n_threads=2,
                            type_k=0, type_v=0)
    every.eval(ids)
    reference = every.scores[len(ids) - 1].astype(np.float64)
    assert np.all(np.abs(every.scores[: len(ids) - 1]).max(axis=1) > 0)
    last_only = load_llama(str(llama_backend.path), n_ctx=512, logits_all=False, verbose=False, n_threads=2,
                                type_k=0, type_v=0)
    kept = _last_position_logits(last_only, ids)
    # llama-cpp-python's own table holds zeros where llama.cpp kept nothing (here: everywhere,
    # the answer position included), so reading it would give a uniform distribution.
    assert not np.any(last_only.scores[: len(ids)])
    np.testing.assert_allclose(kept, reference, atol=1e-3)
    # The backend (one text per decode, as the plain eval above; both with its f32 KV cache)
    # reads exactly that row.
    one_at_a_time = load_backend("smollm2-135m", "llamacpp", threads=2, batch_size=1)
    (score,) = one_at_a_time.label_scores(task, [sst2_dev[0]])
    probs = np.exp(reference - reference.max())
    probs /= probs.sum()
    expected = [probs[one_at_a_time.prepare(task).vocab.token_ids[j]].sum() for j in range(2)]
    np.testing.assert_allclose(score.label_mass, expected, rtol=1e-4)
    # A position that asked for no logits has none: llama.cpp hands back no row for it.
    assert not llama_cpp.llama_get_logits_ith(last_only.ctx, 0)


def test_multi_token_labels_by_the_chain_rule(task, sst2_dev):
    multi = Task(instruction=task.instruction, labels={"good": ["thumbs up"], "bad": ["thumbs down"]},
                 variant_rule="exact")
    backend = load_backend("smollm2-135m", "llamacpp", threads=2, batch_size=4)
    vocab = backend.prepare(multi).vocab
    assert vocab.has_sequences and all(len(s) >= 2 for s in vocab.all_sequences)
    texts = sst2_dev[:5]
    scores = backend.label_scores(multi, texts)
    every = load_llama(str(backend.path), n_ctx=512, logits_all=True, verbose=False, n_threads=2,
                            type_k=0, type_v=0)
    for text, score in zip(texts, scores):
        ids = backend.encode(backend.prompt(multi, text))
        expected = []
        for (sequence,) in vocab.sequences:
            every.reset()
            every.eval(ids + list(sequence[:-1]))
            rows = every.scores[len(ids) - 1: len(ids) + len(sequence) - 1].astype(np.float64)
            log_probs = rows - rows.max(1, keepdims=True)
            log_probs -= np.log(np.exp(log_probs).sum(1, keepdims=True))
            expected.append(np.exp(sum(log_probs[j, t] for j, t in enumerate(sequence))))
        # batched texts share a decode, so llama.cpp's sums run in another order: close, not equal
        np.testing.assert_allclose(score.label_mass, expected, rtol=0.1, atol=1e-4)


def test_prefix_reuse_by_saved_state_gives_the_kv_results(llama_backend, task, sst2_dev):
    by_state = load_backend("smollm2-135m", "llamacpp", threads=2, prefix_reuse="state")
    texts = sst2_dev[:12]
    a = np.array([s.label_mass for s in llama_backend.label_scores(task, texts)])
    b = np.array([s.label_mass for s in by_state.label_scores(task, texts)])
    np.testing.assert_allclose(a, b, rtol=1e-6)
    # and a second call (the prefix left in the cache) gives the first call's numbers again
    again = np.array([s.label_mass for s in llama_backend.label_scores(task, texts)])
    np.testing.assert_allclose(a, again, rtol=1e-6)


@pytest.mark.parametrize("options, named", [
    (dict(dtype="mixed"), "'mixed'"),
    (dict(adapter="out/adapter"), "'out/adapter'"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_tokens=-1), "batch_tokens"),
    (dict(threads=0), "threads"),
    (dict(device="cuda"), "'cuda'"),
    (dict(prefix_reuse="copy"), "'copy'"),
    (dict(kv_type="q8"), "'q8'"),
])
def test_unsupported_options_are_model_errors_naming_the_value(bundled_model_ready, options, named):
    with pytest.raises(ModelError, match=named):
        load_backend("smollm2-135m", "llamacpp", **options)


def test_bad_model_files_are_model_errors(tmp_path):
    with pytest.raises(ModelError, match="missing.gguf"):
        load_backend(str(tmp_path / "missing.gguf"), "llamacpp")
    fake = tmp_path / "weights.gguf"
    fake.write_text("not a model")
    with pytest.raises(ModelError, match="not a GGUF file"):
        load_backend(str(fake), "llamacpp")


def test_howsure_score_with_backend_llamacpp_on_the_gguf_file(tmp_path, llama_backend):
    source = tmp_path / "in.tsv"
    source.write_text("content\na gorgeous, witty film\nthe worst film of the year\n")
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(out), "--text-column", "content",
                                      "--backend", "llamacpp", "-m", str(llama_backend.path), "--threads", "2"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == ["a gorgeous, witty film", "the worst film of the year"]
    assert records[0]["probabilities"]["positive"] > records[1]["probabilities"]["positive"]
    bad = CliRunner().invoke(app, ["score", "-i", str(source), "-o", str(tmp_path / "x.jsonl"),
                                   "--text-column", "content", "--backend", "llamacpp", "--dtype", "bfloat16"])
    assert bad.exit_code == 2 and "bfloat16" in bad.output
