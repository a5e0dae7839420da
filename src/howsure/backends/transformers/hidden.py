"""Hidden states at the answer position, for linear probes (`howsure.probes`).

The answer position is the one whose next-token distribution label scoring reads: the last
token of the rendered prompt. Its hidden state at every layer (the embeddings, then each
decoder layer's output; the last one after the final norm, as transformers returns it) is what
a probe is fitted on. The passes are the label scorer's own (`TransformersBackend._passes`):
texts sorted by length and batched, left-padded after the shared prompt prefix, whose
key/value cache is computed once and reused, so the states are those the label scorer's model
computes at that position (`tests/test_probe_hidden.py` checks them against one plain forward
pass per prompt).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from howsure.backends.base import ProgressCallback
from howsure.backends.transformers.cache import batch_prefix_cache
from howsure.core.task import Task
from howsure.errors import DataError


def n_hidden_layers(backend) -> int:
    """How many hidden states a pass returns per position: the embeddings plus one per layer."""
    return int(backend.model.config.num_hidden_layers) + 1


def answer_hidden_states(
    backend,
    task: Task,
    texts: Sequence[str],
    *,
    layers: Sequence[int] | None = None,
    progress: ProgressCallback | None = None,
) -> np.ndarray:
    """The answer position's hidden state of each text at each layer.

    Parameters
    ----------
    backend : TransformersBackend
    task : Task
        Renders the prompts, as label scoring does.
    texts : sequence of str, length n
    layers : sequence of int, optional
        Keep only these hidden-state indices (0 = embeddings); all by default.
    progress : callable, optional
        Called with the number of texts finished after each pass.

    Returns
    -------
    ndarray of float32, shape (n, n_layers_kept, hidden_size), in the order of ``texts``.
    """
    total = n_hidden_layers(backend)
    keep = list(range(total)) if layers is None else [int(layer) for layer in layers]
    bad = [layer for layer in keep if not 0 <= layer < total]
    if bad:
        raise DataError(f"hidden-state layer {bad[0]} does not exist; this model has layers 0..{total - 1}")
    prepared = backend.prepare(task)
    full_ids = [backend.encode(backend.prompt(task, text)) for text in texts]
    hidden_size = int(backend.model.config.hidden_size)
    out = np.zeros((len(full_ids), len(keep), hidden_size), dtype=np.float32)
    for batch, suffixes, use_prefix in backend._passes(prepared, full_ids):
        states = _forward_hidden(backend, suffixes, prepared.prefix_cache if use_prefix else None,
                                 len(prepared.prefix_ids) if use_prefix else 0, keep)
        out[batch] = states
        if progress:
            progress(len(batch))
    return out


def _forward_hidden(backend, suffixes: list[list[int]], prefix_cache, prefix_len: int, keep: list[int]) -> np.ndarray:
    """One left-padded pass after the shared prefix (built as `TransformersBackend._forward`
    builds it), returning the last position's state at the ``keep`` layers."""
    batch = len(suffixes)
    input_ids, attention_mask, position_ids, _ = backend.padded_batch(suffixes, prefix_len)
    cache = None
    if prefix_cache is not None:
        cache = batch_prefix_cache(prefix_cache, batch, backend.model.config, read_only=True)
    with torch.inference_mode():
        # Outside the backend's padding-skip context its hooks do nothing: every layer computes
        # every position, so the answer position's state is exact at every layer.
        result = backend.model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
            **backend.cache_kwargs(cache), use_cache=False, output_hidden_states=True, logits_to_keep=1,
        )
        states = torch.stack([result.hidden_states[layer][:, -1, :] for layer in keep], dim=1)
    return states.float().cpu().numpy()
