"""Grouped-query attention without copying the keys and values per query head.

Models such as the bundled SmolLM2 give several query heads one key/value head (9 and 3).
transformers' ``sdpa`` attention asks PyTorch's kernel to read the shared heads in place
(``enable_gqa``) only when there is no attention mask; a padded batch has one, so it first
copies every key and value head once per query head (``repeat_kv``), per layer and pass.

On the CPU the backend registers a variant of ``sdpa`` that copies nothing. By default it
computes attention as two batched matmuls per key/value head, with the query heads that share
it stacked into one matrix (`grouped_attention`): a pass holds only as many queries and keys
per row as its texts have tokens, too little arithmetic to pay for the flash kernel's per-head
overhead (`bench/bench_scoring.py` times the whole pass with this default). With
``GROUPED_MATMULS = False`` it calls the kernel with ``enable_gqa`` and the padding mask
(accepted since torch 2.5; the same results to the last bit as on copied heads).

On CUDA transformers avoids masked GQA because the flash kernels refuse a mask and PyTorch
would fall back to its slow math kernel; the backend keeps plain ``sdpa`` there.
"""

from __future__ import annotations

import torch

#: The name this attention is registered under (transformers' AttentionInterface).
NAME = "howsure_sdpa_gqa"


def sdpa_gqa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                       **kwargs):
    """transformers' sdpa attention, reading grouped key/value heads in place (see the module
    docstring)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    groups = getattr(module, "num_key_value_groups", 1)
    if groups == 1 or kwargs.get("position_bias") is not None or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, is_causal=is_causal, **kwargs)
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    if GROUPED_MATMULS and not module.training and (attention_mask is None or attention_mask.dtype == torch.bool):
        return grouped_attention(query, key, value, attention_mask, scaling, causal=causal), None
    causal = query.shape[2] > 1 and attention_mask is None and causal
    out = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout if module.training else 0.0,
        scale=scaling, is_causal=causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


GROUPED_MATMULS = True
"""Whether `sdpa_gqa_attention` uses `grouped_attention` (True) or PyTorch's kernel."""


def grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      scaling: float | None, *, causal: bool = True) -> torch.Tensor:
    """Attention as two batched matmuls per key/value head, the query heads that share it
    stacked: (batch, heads, queries, dim) queries over (batch, kv heads, keys, dim) keys and
    values, a boolean ``mask`` (True where a query may attend; broadcast over heads) or None
    (causal when ``causal``, the queries being the last positions). Returns (batch, queries,
    heads, dim). A query that may attend to nothing gets an even mix instead of NaN (only pads
    do, and their results are dropped)."""
    batch, heads, queries, dim = query.shape
    kv_heads, keys = key.shape[1], key.shape[2]
    groups = heads // kv_heads
    scaling = dim ** -0.5 if scaling is None else scaling
    scores = torch.matmul(query.reshape(batch, kv_heads, groups * queries, dim), key.transpose(-1, -2))
    scores = scores.view(batch, kv_heads, groups, queries, keys).mul_(scaling)
    if mask is None and causal and queries > 1:
        mask = torch.ones(queries, keys, dtype=torch.bool, device=query.device).tril(keys - queries)
    if mask is not None:
        allowed = mask if mask.dim() == 2 else mask.unsqueeze(2)  # (batch, 1, 1, queries, keys)
        scores.masked_fill_(~allowed, torch.finfo(scores.dtype).min)
    weights = scores.softmax(-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(weights.view(batch, kv_heads, groups * queries, keys), value)
    return out.view(batch, heads, queries, dim).transpose(1, 2).contiguous()


def use_gqa_attention(model) -> bool:
    """Switch ``model`` from ``sdpa`` to `sdpa_gqa_attention` (masks built as for sdpa).
    Returns whether it did: models using another attention are left alone."""
    if getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, sdpa_gqa_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
