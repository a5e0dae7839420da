"""Skip the padding in a padded batch's per-token layers.

A batch of texts of different lengths is padded to its longest, and every padded position
goes through every linear layer like a real token: the wasted work is the batch's padding
share, which is large when the batch could not be sorted by length (the review service
scores whatever 32 texts are waiting). Only attention needs the (batch, position) layout;
the MLP and the attention projections treat each position on its own. So hooks on those
blocks hand them the real tokens alone (gathered into one matrix) and scatter their output
back into the padded layout, with zeros at the pads.

Pads are masked out as keys, so what they hold never reaches a real token; a real token's
result is the same as in the padded pass (up to float rounding from a different matmul shape).

    rows = skip_padding(model)            # once, after loading
    with rows.only(token_mask):           # around a forward pass; the mask is 0 at the pads
        model(input_ids=..., attention_mask=...)

Hooks rather than wrapper modules keep the model's module tree, parameter names and state
dict as transformers built them. Outside ``only`` the hooks do nothing (prefix passes, the
multi-token sequence pass), and inside it they act only on inputs of the masked pass's shape.
The selection is per thread, so passes running in parallel threads (`map_concurrently`)
each use their own.

The last decoder layer goes further when only the answer position is read (``only(...,
answers_only=True)``; the backend keeps the logits of the last position alone): its keys and
values are still needed at every real token (attention at the answer reads them, and so may a
pass that continues from the cache), but its query projection, output projection and MLP only
at the answer position, the last of each left-padded row. Those three then compute one row
per text; every other position of that layer holds a placeholder nothing reads.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

#: Names of the per-token linear layers of an attention block in common architectures
#: (Llama/Mistral/Qwen/SmolLM, GPT-NeoX, Phi, OPT).
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "qkv_proj", "query_key_value", "dense",
                         "out_proj")
#: Those of them that only the attention's own queries and output go through (not the keys
#: and values): in the last layer they are needed at the answer position alone.
QUERY_AND_OUTPUT_PROJECTIONS = ("q_proj", "o_proj", "dense", "out_proj")


class TokenRows:
    """Which flattened (batch x position) rows of the current thread's pass are real tokens,
    and the hooks that use it (see `skip_padding`)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.hooked: list[torch.nn.Module] = []
        #: Hooked blocks needed only at the answer position under ``answers_only``.
        self.answer_only: list[torch.nn.Module] = []
        self._handles: list = []

    @contextlib.contextmanager
    def only(self, token_mask: torch.Tensor, *, answers_only: bool = False) -> Iterator[None]:
        """Within the block, hooked blocks compute only where ``token_mask`` (batch x
        positions, nonzero at real tokens, left-padded) is set; nothing is skipped when there
        is no pad. With ``answers_only`` the `answer_only` blocks compute only the last
        position of each row."""
        mask = token_mask.reshape(-1).bool()
        rows = None if bool(mask.all()) else mask.nonzero().squeeze(1)
        batch, width = token_mask.shape
        answers = None
        if answers_only and self.answer_only:
            answers = torch.arange(batch, device=token_mask.device) * width + (width - 1)
        saved = tuple(getattr(self._local, name, None) for name in ("rows", "answers", "shape"))
        self._local.rows, self._local.answers, self._local.shape = rows, answers, (batch, width)
        try:
            yield
        finally:
            self._local.rows, self._local.answers, self._local.shape = saved

    def _gather(self, module, args):
        rows = getattr(self._local, "rows", None)
        answers = getattr(self._local, "answers", None)
        if answers is not None and any(module is m for m in self.answer_only):
            rows = answers
        if rows is None or len(args) != 1 or tuple(args[0].shape[:-1]) != self._local.shape:
            self._local.gathered = None
            return None  # no pads, or not the pass the mask describes
        self._local.gathered = rows
        x = args[0]
        return (x.reshape(-1, x.shape[-1]).index_select(0, rows),)

    def _scatter(self, module, args, out):
        rows = getattr(self._local, "gathered", None)
        if rows is None:
            return None
        self._local.gathered = None
        full = out.new_zeros(self._local.shape[0] * self._local.shape[1], out.shape[-1])
        full.index_copy_(0, rows, out)
        return full.view(*self._local.shape, out.shape[-1])

    def hook(self, module: torch.nn.Module) -> None:
        """Make ``module`` (per-token: a linear layer or an MLP block, called with one tensor
        and returning one) compute on the selected rows only."""
        self._handles.append(module.register_forward_pre_hook(self._gather))
        self._handles.append(module.register_forward_hook(self._scatter))
        self.hooked.append(module)

    def remove(self) -> None:
        """Take the hooks off again."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.hooked.clear()
        self.answer_only.clear()


def skip_padding(model) -> TokenRows:
    """Hook every decoder layer's ``mlp`` block and the linear layers of its attention block
    (see `TokenRows`); in the last decoder layer, the MLP and the query and output projections
    are also `TokenRows.answer_only`. Returns the `TokenRows` that selects the real tokens; a
    model with no such blocks is left as it is (``hooked`` is empty, and the selection does
    nothing).

    The hooked blocks are never nested in one another, so one gather waits for its scatter."""
    rows = TokenRows()
    mlps, attentions = [], []
    for name, module in model.named_modules():
        if name.endswith(".mlp"):
            rows.hook(module)
            mlps.append(module)
        elif name.endswith((".self_attn", ".attn", ".attention")):
            for child, layer in module.named_children():
                if child in ATTENTION_PROJECTIONS and isinstance(layer, torch.nn.Module):
                    rows.hook(layer)
            attentions.append(module)
    if mlps and attentions:
        rows.answer_only = [mlps[-1]] + [layer for child, layer in attentions[-1].named_children()
                                         if child in QUERY_AND_OUTPUT_PROJECTIONS and layer in rows.hooked]
    return rows
