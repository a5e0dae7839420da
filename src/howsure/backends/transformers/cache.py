"""The shared prompt prefix's key/value cache, handed to every batch as views, under whichever
argument name this transformers version uses."""

from __future__ import annotations

import functools
import inspect

import torch


@functools.cache
def _read_only_layer_class():
    from transformers.cache_utils import DynamicLayer

    class ReadOnlyLayer(DynamicLayer):
        """A cache layer that returns prefix + new keys and values to attention without keeping
        them."""

        def update(self, key_states, value_states, *args, **kwargs):
            return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    return DynamicLayer, ReadOnlyLayer


def batch_prefix_cache(prefix_cache, batch: int, config, *, read_only: bool):
    """The shared prefix's keys and values as a cache for ``batch`` rows (views, no copies).

    ``read_only``: attention reads the cache but it never grows, so each layer's prefix + new
    keys are freed when the layer is done instead of held until the pass ends (less peak memory:
    `bench/bench_scoring.py` prints it). Only for passes whose cache
    nobody reads afterwards; the multi-token sequence pass continues from a growing one."""
    from transformers import DynamicCache

    cache = DynamicCache(
        ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in prefix_cache],
        config=config,
    )
    if read_only:
        dynamic_layer, read_only_layer = _read_only_layer_class()
        for layer in cache.layers:
            if type(layer) is dynamic_layer:  # sliding-window and other layers keep their update
                layer.__class__ = read_only_layer
    return cache


def cache_keyword(model) -> str:
    """Name of the forward argument that takes a KV cache: transformers renamed
    ``past_key_values`` to ``cache`` (deprecated in 5.x, removed in 5.40), and the range in
    pyproject.toml spans both."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def output_cache(out):
    """The KV cache a forward pass returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
