"""The fast path (shared prefix KV cache, length-sorted left-padded batches, logits only at the
answer position) must equal the naive computation: one full forward pass per text."""

import time

import numpy as np
import pytest
import torch

from cpu_simulation import with_native_bf16
from howsure.backends import load_backend
from howsure.backends.labels import build_label_vocabulary
from howsure.errors import ModelError, TaskError
from howsure.core.task import Example, Task

TEXTS = [
    "A gorgeous, witty, seductive movie.",
    "dull",
    "The worst film of the year, dull and stupid, and it goes on and on and on for hours.",
    " leading space and\nnew line",
    "{braces} and ünïcödé ✓",
    "positive",
    "x",
]


def sentiment_task(**overrides):
    fields = dict(
        instruction="Is the sentiment of this text positive or negative? Answer with one word.\n\nText: {text}",
        labels={"positive": ["positive"], "negative": ["negative"], "unsure": ["not sure"]},
        system="You judge sentiment.",
        examples=[Example("very good", "positive"), Example("quite bad", "negative")],
    )
    fields.update(overrides)
    return Task(**fields)


def naive_scores(backend, task, text):
    """Full prompt, one text, every token recomputed; sequences scored by separate full passes."""
    vocab = backend.prepare(task).vocab  # which tokens count is tested separately below
    ids = backend.encode(backend.prompt(task, text))
    with torch.no_grad():
        probs = backend.model(torch.tensor([ids], device=backend.device)).logits[0, -1].float().softmax(-1).cpu().numpy()
    masses = []
    for label_ids, seqs in zip(vocab.token_ids, vocab.sequences):
        mass = float(probs[label_ids].sum())
        for seq in seqs:
            with torch.no_grad():
                lp = backend.model(torch.tensor([ids + list(seq)], device=backend.device)).logits[0].float().log_softmax(-1)
            mass += float(sum(lp[len(ids) - 1 + j, seq[j]] for j in range(len(seq))).exp())
        masses.append(mass)
    masses = np.array(masses)
    return masses / masses.sum(), masses, probs


@pytest.fixture(scope="module")
def chat_backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), batch_size=3)


@pytest.fixture(scope="module")
def plain_backend(tiny_plain_model_dir):
    return load_backend(str(tiny_plain_model_dir), batch_size=4)


@pytest.mark.parametrize("backend_name", ["chat_backend", "plain_backend"])
@pytest.mark.parametrize("rule", ["variants", "exact"])
def test_fast_path_equals_naive(request, backend_name, rule):
    backend = request.getfixturevalue(backend_name)
    task = sentiment_task(variant_rule=rule)
    fast = backend.label_scores(task, TEXTS, top_k=5)
    assert backend.prepare(task).prefix_ids, "the shared prefix should be in use"
    assert backend.prepare(task).vocab.has_sequences, "'not sure' should be a multi-token label"
    for text, result in zip(TEXTS, fast):
        probabilities, masses, next_probs = naive_scores(backend, task, text)
        np.testing.assert_allclose(result.probabilities, probabilities, atol=1e-4)
        np.testing.assert_allclose(result.label_mass, masses, atol=1e-5, rtol=1e-4)
        assert result.probabilities.sum() == pytest.approx(1.0)
        assert result.other_mass == pytest.approx(1 - masses.sum(), abs=1e-5)
        top_naive = np.argsort(-next_probs)[:5]
        assert [t for t, _ in result.top_tokens] == [backend.decode_token(int(i)) for i in top_naive]


def test_prefix_sharing_and_batching_do_not_change_results(tiny_model_dir):
    task = sentiment_task()
    reference = load_backend(str(tiny_model_dir), batch_size=1, share_prefix=False).label_scores(task, TEXTS)
    for options in (dict(batch_size=64), dict(batch_size=2, batch_tokens=20), dict(share_prefix=False, batch_size=5),
                    dict(pass_workers=1, batch_size=4), dict(pass_workers=3, batch_size=6)):
        other = load_backend(str(tiny_model_dir), **options).label_scores(task, TEXTS)
        for a, b in zip(reference, other):
            np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_read_only_prefix_cache_hands_attention_the_whole_context_but_does_not_grow(chat_backend):
    from howsure.backends.transformers.cache import batch_prefix_cache

    prepared = chat_backend.prepare(sentiment_task())
    prefix_len = len(prepared.prefix_ids)
    config = chat_backend.model.config
    new_keys = torch.randn(2, config.num_key_value_heads, 5, config.hidden_size // config.num_attention_heads,
                           device=chat_backend.device)
    for read_only, kept in ((True, prefix_len), (False, prefix_len + 5)):
        cache = batch_prefix_cache(prepared.prefix_cache, 2, config, read_only=read_only)
        keys, values = cache.layers[0].update(new_keys, new_keys)
        assert keys.shape[-2] == values.shape[-2] == prefix_len + 5
        assert torch.equal(keys[..., prefix_len:, :], new_keys)
        assert cache.layers[0].keys.shape[-2] == kept
        assert cache.get_seq_length() == kept


def _brute_force_cost(lengths, max_rows, max_tokens, overhead):
    import itertools

    best = float("inf")
    for cuts in itertools.product([False, True], repeat=len(lengths) - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [len(lengths)]
        passes = list(zip(bounds, bounds[1:]))
        if any(b - a > max_rows or (b - a > 1 and (b - a) * lengths[b - 1] > max_tokens) for a, b in passes):
            continue
        best = min(best, sum(overhead + (b - a) * lengths[b - 1] for a, b in passes))
    return best


def test_split_sorted_is_the_cheapest_split_within_the_limits():
    from howsure.backends.transformers.planning import split_sorted

    rng = np.random.default_rng(3)
    for _ in range(60):
        lengths = sorted(rng.integers(1, 40, size=int(rng.integers(1, 11))).tolist())
        max_rows, max_tokens, overhead = int(rng.integers(1, 6)), int(rng.integers(20, 120)), int(rng.integers(0, 50))
        passes = split_sorted(lengths, max_rows, max_tokens, overhead)
        assert [a for a, _ in passes] == [0] + [b for _, b in passes[:-1]] and passes[-1][1] == len(lengths)
        for a, b in passes:
            assert b - a <= max_rows and (b - a == 1 or (b - a) * lengths[b - 1] <= max_tokens)
        cost = sum(overhead + (b - a) * lengths[b - 1] for a, b in passes)
        assert cost == _brute_force_cost(lengths, max_rows, max_tokens, overhead)
        for a, b in passes:  # a pass split again stays whole
            assert split_sorted(lengths[a:b], max_rows, max_tokens, overhead) == [(0, b - a)]


def test_results_follow_input_order_and_progress_counts_every_text(chat_backend):
    task = sentiment_task()
    seen = []
    forward = chat_backend.label_scores(task, TEXTS, progress=seen.append)
    backward = chat_backend.label_scores(task, TEXTS[::-1])
    assert sum(seen) == len(TEXTS)
    for a, b in zip(forward, backward[::-1]):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)


def test_variant_rule_counts_case_and_space_variants(chat_backend):
    task = sentiment_task()
    vocab = chat_backend.prepare(task).vocab
    strings = {vocab.token_strings[int(t)] for t in vocab.token_ids[0]}
    assert {"positive", " positive", " Positive"} <= strings
    exact = chat_backend.prepare(sentiment_task(variant_rule="exact")).vocab
    # the chat template's answer follows a newline: exactly one spelling, no leading space
    assert [exact.token_strings[int(t)] for t in exact.token_ids[0]] == ["positive"]
    result, = chat_backend.label_scores(task, ["fine"], details=True)
    assert {s for s, _ in result.variants["positive"]} >= {"positive", " positive"}


def test_dtype_bfloat16_close_to_float32(tiny_model_dir, monkeypatch):
    with_native_bf16(monkeypatch)  # bf16 runs, unpacked where oneDNN cannot pack it
    task = sentiment_task(labels={"positive": ["positive"], "negative": ["negative"]}, examples=[])
    fp32 = load_backend(str(tiny_model_dir)).label_scores(task, TEXTS)
    bf16 = load_backend(str(tiny_model_dir), dtype="bfloat16").label_scores(task, TEXTS)
    diffs = [abs(a.probabilities - b.probabilities).max() for a, b in zip(fp32, bf16)]
    assert max(diffs) < 0.1  # a random tiny model is far less stable than a trained one


def test_mixed_precision_runs_mlp_input_projections_in_bf16_and_stays_close(tiny_model_dir, monkeypatch):
    with_native_bf16(monkeypatch)  # bf16 runs, unpacked where oneDNN cannot pack it
    task = sentiment_task(labels={"positive": ["positive"], "negative": ["negative"]}, examples=[])
    fp32 = load_backend(str(tiny_model_dir)).label_scores(task, TEXTS)
    mixed_backend = load_backend(str(tiny_model_dir), dtype="mixed")
    layer = mixed_backend.model.model.layers[0]
    assert layer.mlp.up_proj.weight.dtype == torch.bfloat16
    assert layer.mlp.gate_proj.weight.dtype == torch.bfloat16
    assert layer.mlp.down_proj.weight.dtype == torch.float32  # the product of gate and up stays exact
    assert layer.self_attn.q_proj.weight.dtype == torch.float32
    mixed = mixed_backend.label_scores(task, TEXTS)
    diffs = [abs(a.probabilities - b.probabilities).max() for a, b in zip(fp32, mixed)]
    assert 0 < max(diffs) < 0.05


def test_mixed_precision_linear_computes_in_bf16_or_exactly():
    from howsure.backends.transformers.precision import MixedPrecisionLinear

    generator = torch.Generator().manual_seed(0)
    linear = torch.nn.Linear(64, 48, bias=True)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(48, 64, generator=generator))
    x = torch.randn(7, 64, generator=generator)
    with torch.no_grad():
        reference = linear(x)
        mixed = MixedPrecisionLinear(linear, keep_float32=True)
        fast = mixed(x)
        mixed.exact = True
        exact = mixed(x)
    assert fast.dtype == exact.dtype == torch.float32 and mixed.weight.dtype == torch.bfloat16
    scale = reference.abs().max()
    assert (fast - reference).abs().max() > 1e-3 * scale  # bf16 really rounds
    assert torch.equal(exact, reference)  # the float32 weights themselves
    assert "float32_weight" not in mixed.state_dict()  # saved once, as the bf16 weight
    without = MixedPrecisionLinear(linear)
    without.exact = True
    with pytest.raises(ModelError, match="keeps no float32 weights"):
        without(x)


def test_mixed_rescores_near_ties_exactly_and_only_them(tiny_model_dir, monkeypatch):
    with_native_bf16(monkeypatch)  # bf16 runs, unpacked where oneDNN cannot pack it
    from howsure.backends.transformers.backend import top_two_gap

    task = sentiment_task(labels={"positive": ["positive"], "negative": ["negative"]}, examples=[])
    texts = TEXTS * 3
    fp32 = load_backend(str(tiny_model_dir)).label_scores(task, texts)
    every = load_backend(str(tiny_model_dir), dtype="mixed", exact_ties=0.49).label_scores(task, texts)
    for a, b in zip(fp32, every):  # every text is a near tie at 0.49: all re-scored exactly
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-6)
        np.testing.assert_allclose(b.label_mass, a.label_mass, rtol=1e-3)
    plain = load_backend(str(tiny_model_dir), dtype="mixed", exact_ties=0).label_scores(task, texts)
    assert max(abs(a.probabilities - b.probabilities).max() for a, b in zip(fp32, plain)) > 1e-4
    assert load_backend(str(tiny_model_dir), dtype="mixed").exact_ties == 0.01  # on unless turned off
    band = float(np.median([top_two_gap(r.probabilities) for r in plain])) / 2  # about half are ties
    checked = load_backend(str(tiny_model_dir), dtype="mixed", exact_ties=band).label_scores(task, texts)
    ties = [top_two_gap(r.probabilities) < 2 * band for r in plain]
    assert 0 < sum(ties) < len(texts)
    for tie, exact, bf16, result in zip(ties, every, plain, checked):
        expected = exact if tie else bf16
        np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    with pytest.raises(ModelError, match=r"exact_ties must be a number in \[0, 0.5\), got 0.5"):
        load_backend(str(tiny_model_dir), dtype="mixed", exact_ties=0.5)


def _word_level_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "yes": 1, "no": 2, "Yes": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_verbalizer_without_token_is_a_clear_error():
    task = Task(instruction="{text}", labels={"yes": ["yes"], "maybe": ["maybe"]})
    with pytest.raises(TaskError, match=r"label 'maybe': verbalizer 'maybe' has no token in this vocabulary"):
        build_label_vocabulary(task, _word_level_tokenizer())


def test_word_level_variants_found():
    task = Task(instruction="{text}", labels={"yes": ["yes"], "no": ["no"]})
    vocab = build_label_vocabulary(task, _word_level_tokenizer())
    assert sorted(vocab.token_ids[0].tolist()) == [1, 3]


@pytest.mark.parametrize(
    "model, options, match",
    [
        ("/no/such/dir", {}, "is not a preset"),
        ("missing.gguf", {}, "GGUF file 'missing.gguf' does not exist"),
        ("no-such-preset", {}, "is not a preset"),
        (None, {"dtype": "float8"}, "dtype .float8. is not one of float32, bfloat16, mixed"),
        (None, {"batch_size": 0}, "must be >= 1"),
    ],
)
def test_bad_backend_arguments(tiny_model_dir, model, options, match):
    with pytest.raises(ModelError, match=match):
        load_backend(model or str(tiny_model_dir), **options)


def test_concurrent_passes_keep_order_use_a_share_of_the_threads_and_restore_them():
    from howsure.backends.transformers.planning import map_concurrently

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen_threads = []

        def square(x):
            seen_threads.append(torch.get_num_threads())
            time.sleep(0.01 * (5 - x))  # later items finish first
            return x * x

        assert list(map_concurrently(square, range(5), 2)) == [0, 1, 4, 9, 16]
        assert set(seen_threads) == {1} and torch.get_num_threads() == 2
        assert list(map_concurrently(square, [3], 2)) == [9] and seen_threads[-1] == 2  # one item: no pool

        def fail_on_two(x):
            if x == 2:
                raise ValueError("pass 2 failed")
            return x

        with pytest.raises(ValueError, match="pass 2 failed"):
            list(map_concurrently(fail_on_two, range(4), 2))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_pass_workers_default_and_bad_values(tiny_model_dir):
    assert load_backend(str(tiny_model_dir), device="cpu").pass_workers == 1  # an opt-in
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ModelError, match=f"pass_workers must be a whole number >= 1, got {bad!r}"):
            load_backend(str(tiny_model_dir), pass_workers=bad)


def test_bad_devices_are_refused_with_the_value_named(tiny_model_dir):
    for device, match in (("tpu", "device 'tpu' is not one torch knows; use auto, cpu, cuda or cuda:N"),
                          ("meta", "device 'meta' is not supported"),
                          ("cuda:7", "device 'cuda:7'")):
        with pytest.raises(ModelError, match=match):
            load_backend(str(tiny_model_dir), device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ModelError, match="device 'cuda': this torch sees no CUDA GPU"):
            load_backend(str(tiny_model_dir), device="cuda")
    auto = load_backend(str(tiny_model_dir))
    assert auto.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert next(auto.model.parameters()).device.type == auto.device.type


def needs_cuda(test):
    """Marked ``cuda``, the one kind of test CI may skip (tests/conftest.py), and skipped where
    torch sees no CUDA GPU."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)")
    return pytest.mark.cuda(skip(test))


@needs_cuda
def test_cuda_scores_equal_cpu_scores(tiny_model_dir):
    """Every path on the GPU: shared prefix, batches, multi-token labels ('not sure')."""
    task = sentiment_task()
    cpu = load_backend(str(tiny_model_dir), device="cpu", batch_size=3).label_scores(task, TEXTS, top_k=5)
    gpu_backend = load_backend(str(tiny_model_dir), device="cuda", batch_size=3)
    assert gpu_backend.prepare(task).vocab.has_sequences
    assert gpu_backend.prepare(task).prefix_cache[0][0].is_cuda
    gpu = gpu_backend.label_scores(task, TEXTS, top_k=5)
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=1e-4)
        np.testing.assert_allclose(b.label_mass, a.label_mass, atol=1e-5, rtol=1e-4)
        assert isinstance(b.probabilities, np.ndarray)
    naive = naive_scores(gpu_backend, task, TEXTS[0])[0]
    np.testing.assert_allclose(gpu[0].probabilities, naive, atol=1e-4)


@needs_cuda
@pytest.mark.parametrize("dtype, tolerance", [("mixed", 0.05), ("bfloat16", 0.1)])  # as on the CPU above
def test_reduced_precision_on_cuda_stays_close(tiny_model_dir, dtype, tolerance):
    task = sentiment_task()
    exact = load_backend(str(tiny_model_dir), device="cuda").label_scores(task, TEXTS)
    reduced = load_backend(str(tiny_model_dir), device="cuda", dtype=dtype).label_scores(task, TEXTS)
    for a, b in zip(exact, reduced):
        np.testing.assert_allclose(b.probabilities, a.probabilities, atol=tolerance)


def test_directory_without_config(tmp_path):
    with pytest.raises(ModelError, match="has no config.json"):
        load_backend(str(tmp_path))


def test_unknown_backend_name():
    with pytest.raises(ModelError, match="unknown backend 'nope'; available: .*transformers"):
        load_backend("x", backend="nope")
