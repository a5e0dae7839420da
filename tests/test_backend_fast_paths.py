"""Work the backend skips without changing a result: the pads in the per-token layers
(howsure.backends.transformers.unpadding) and the copies of shared key/value heads in attention
(howsure.backends.transformers.attention)."""

import threading

import numpy as np
import torch

from howsure.backends import load_backend
from howsure.backends.transformers.unpadding import TokenRows, skip_padding
from howsure.core.task import Task

MASK = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])  # left padding, 7 real of 12


def hooked_linear():
    torch.manual_seed(0)
    linear = torch.nn.Linear(5, 3)
    rows = TokenRows()
    rows.hook(linear)
    return linear, rows


def test_a_hooked_block_computes_only_the_real_tokens_and_zeros_the_pads():
    linear, rows = hooked_linear()
    seen = []
    linear.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape)))
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        expected = linear(x)
        with rows.only(MASK):
            out = linear(x)
    assert seen == [(3, 4, 5), (7, 5)]  # the second call ran on the 7 real tokens only
    assert out.shape == (3, 4, 3)
    real = MASK.bool()
    torch.testing.assert_close(out[real], expected[real])
    assert (out[~real] == 0).all()


def test_outside_the_selection_or_on_another_shape_nothing_is_skipped():
    linear, rows = hooked_linear()
    x = torch.randn(3, 4, 5)
    other = torch.randn(2, 6, 5)  # e.g. the multi-token sequence pass inside the same block
    with torch.no_grad():
        with rows.only(MASK):
            torch.testing.assert_close(linear(other), torch.nn.functional.linear(other, linear.weight, linear.bias))
        torch.testing.assert_close(linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias))
        with rows.only(torch.ones(3, 4)):  # no pads: nothing to skip
            torch.testing.assert_close(linear(x), torch.nn.functional.linear(x, linear.weight, linear.bias))
    rows.remove()
    with torch.no_grad(), rows.only(MASK):
        assert linear(x).shape == (3, 4, 3) and (linear(x) != 0).all()


def test_the_selection_belongs_to_the_thread_that_made_it():
    linear, rows = hooked_linear()
    x = torch.randn(3, 4, 5)
    inside, other_thread = threading.Event(), {}

    def elsewhere():
        inside.wait()
        with torch.no_grad():
            other_thread["out"] = linear(x)

    thread = threading.Thread(target=elsewhere)
    thread.start()
    with torch.no_grad(), rows.only(MASK):
        inside.set()
        thread.join()
    assert (other_thread["out"] != 0).all()  # computed in full: the other thread selected nothing


def test_the_backend_skips_pads_in_its_mlp_and_attention_projections(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), batch_size=8, batch_tokens=10_000)
    layers = backend.model.config.num_hidden_layers
    assert len(backend._real_tokens.hooked) == layers * 5  # mlp, q, k, v, o in every layer
    task = Task(instruction="Review: {text}\nPositive or negative?",
                labels={"positive": ["positive"], "negative": ["negative"]})
    texts = ["good", "a long and winding text that needs many more tokens than the others do", "bad"]
    prefix = len(backend.prepare(task).prefix_ids)  # the prefix's own pass has no pads
    mlp_rows = []
    handle = backend.model.model.layers[0].mlp.register_forward_pre_hook(
        lambda module, args: mlp_rows.append(args[0].shape[0] if args[0].dim() == 2 else None))
    skipping = backend.label_scores(task, texts)
    handle.remove()
    real_tokens = sum(len(backend.encode(backend.prompt(task, t))) - prefix for t in texts)
    assert mlp_rows == [real_tokens]  # one pass, and the MLP saw its real tokens only
    backend._real_tokens.remove()
    padded = backend.label_scores(task, texts)
    for a, b in zip(skipping, padded):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.label_mass, b.label_mass, rtol=1e-4)


def test_an_answer_only_block_computes_the_last_position_of_each_row_alone():
    linear, rows = hooked_linear()
    rows.answer_only = [linear]
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        expected = linear(x)
        with rows.only(MASK, answers_only=True):
            out = linear(x)
        with rows.only(MASK):  # without answers_only: the real tokens, as before
            real_only = linear(x)
    torch.testing.assert_close(out[:, -1], expected[:, -1])
    assert (out[:, :-1] == 0).all()
    torch.testing.assert_close(real_only[MASK.bool()], expected[MASK.bool()])


def test_the_last_layer_computes_queries_output_and_mlp_at_the_answer_alone(tiny_model_dir):
    backend = load_backend(str(tiny_model_dir), batch_size=8, batch_tokens=10_000)
    last = backend.model.model.layers[-1]
    assert {id(m) for m in backend._real_tokens.answer_only} == {
        id(last.mlp), id(last.self_attn.q_proj), id(last.self_attn.o_proj)}
    task = Task(instruction="Review: {text}\nPositive or negative?",
                labels={"positive": ["positive"], "negative": ["negative"]})
    texts = ["good", "a long and winding text that needs many more tokens than the others do", "bad"]
    prefix = len(backend.prepare(task).prefix_ids)  # the prefix's own pass computes everything
    seen = {}
    for name in ("mlp", "self_attn.k_proj", "self_attn.q_proj"):
        last.get_submodule(name).register_forward_pre_hook(
            lambda module, args, name=name: seen.setdefault(name, args[0].shape[0] if args[0].dim() == 2 else None)
            and None)  # a pre-hook that returns something replaces the arguments
    pruned = backend.label_scores(task, texts)
    real_tokens = sum(len(backend.encode(backend.prompt(task, t))) - prefix for t in texts)
    assert seen == {"mlp": 3, "self_attn.q_proj": 3, "self_attn.k_proj": real_tokens}
    backend._real_tokens.answer_only = []
    full = backend.label_scores(task, texts)
    for a, b in zip(pruned, full):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.label_mass, b.label_mass, rtol=1e-4)


def test_skip_padding_leaves_a_model_without_such_blocks_alone():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert skip_padding(model).hooked == []


def test_grouped_query_attention_reads_shared_heads_in_place_with_the_same_results(tiny_model_dir, monkeypatch):
    from howsure.backends.transformers import attention

    backend = load_backend(str(tiny_model_dir), batch_size=8)
    assert backend.model.config._attn_implementation == attention.NAME
    task = Task(instruction="Review: {text}\nPositive or negative?",
                labels={"positive": ["positive"], "negative": ["negative"]})
    texts = ["good", "a long and winding text that needs many more tokens than the others do", "bad", "fine"]
    key_heads = []
    kernel, grouped = torch.nn.functional.scaled_dot_product_attention, attention.grouped_attention

    def spy(query, key, value, **kwargs):
        key_heads.append(("sdpa", query.shape[1], key.shape[1], kwargs.get("enable_gqa", False)))
        return kernel(query, key, value, **kwargs)

    def grouped_spy(query, key, value, *args, **kwargs):
        key_heads.append(("grouped", query.shape[1], key.shape[1], True))
        return grouped(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    monkeypatch.setattr(attention, "grouped_attention", grouped_spy)
    in_place = backend.label_scores(task, texts)
    assert set(key_heads) == {("grouped", 4, 2, True)}  # the tiny model: 4 query heads share 2 kv heads
    key_heads.clear()
    monkeypatch.setattr(attention, "GROUPED_MATMULS", False)  # PyTorch's kernel, reading them in place
    kernel_in_place = backend.label_scores(task, texts)
    assert set(key_heads) == {("sdpa", 4, 2, True)}
    key_heads.clear()
    backend.model.set_attn_implementation("sdpa")
    copied = backend.label_scores(task, texts)
    assert set(key_heads) == {("sdpa", 4, 4, False)}  # transformers copies them per query head under a mask
    for a, b, c in zip(in_place, kernel_in_place, copied):
        np.testing.assert_allclose(b.probabilities, c.probabilities, atol=1e-6)
        np.testing.assert_allclose(a.probabilities, c.probabilities, atol=1e-5)


def test_grouped_attention_equals_the_kernel_with_a_padding_mask_or_causally():
    from howsure.backends.transformers.attention import grouped_attention

    torch.manual_seed(0)
    batch, heads, kv_heads, queries, prefix, dim = 3, 6, 2, 5, 4, 8
    query = torch.randn(batch, heads, queries, dim)
    key, value = torch.randn(2, batch, kv_heads, prefix + queries, dim)
    real = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]).bool()  # left padding
    causal = torch.ones(queries, prefix + queries).tril(prefix).bool()
    mask = (causal & torch.cat([torch.ones(batch, prefix).bool(), real], 1)[:, None, :])[:, None]
    kernel = torch.nn.functional.scaled_dot_product_attention
    expected = kernel(query, key, value, attn_mask=mask, enable_gqa=True).transpose(1, 2)
    torch.testing.assert_close(grouped_attention(query, key, value, mask, None), expected)
    expected = kernel(query, key[:, :, prefix:], value[:, :, prefix:], is_causal=True, enable_gqa=True)
    torch.testing.assert_close(grouped_attention(query, key[:, :, prefix:], value[:, :, prefix:], None, None),
                               expected.transpose(1, 2))
    nowhere = torch.zeros_like(mask)  # a query that may attend to nothing: an even mix, no NaN
    assert torch.isfinite(grouped_attention(query, key, value, nowhere, None)).all()


def test_other_attention_implementations_are_left_alone(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from howsure.backends.transformers.attention import use_gqa_attention

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), attn_implementation="eager")
    assert not use_gqa_attention(model)
    assert model.config._attn_implementation == "eager"
