"""Mixed precision: the MLP blocks' input-side projections computed in bfloat16 inside a float32
model, with the float32 weights kept for exact re-scoring of near ties."""

from __future__ import annotations

import torch

from howsure.backends.transformers import onednn
from howsure.errors import ModelError

#: Names of an MLP's output projection in common architectures (Llama/Mistral/Qwen, GPT-2,
#: OPT/Phi, GPT-NeoX, T5-style): it stays float32, since rounding the product of gate and up
#: to bf16 before it was the largest source of drift.
MLP_OUTPUT_PROJECTIONS = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "w2", "wo")


class MixedPrecisionLinear(torch.nn.Module):
    """A linear layer that computes in bfloat16 inside a float32 model: its input is rounded to
    bf16, multiplied by bf16 weights, and the result cast back to float32, so what follows stays
    float32.

    With ``keep_float32`` it also keeps the layer's float32 weights and, while ``exact`` is set,
    computes with them exactly as the float32 layer does; that serves to re-score the few texts
    where bf16's drift could change the answer. Loaded from a float32 safetensors file (the
    bundled model's cache), those weights are pages of the file mapping, handed back to the
    kernel after the bf16 copy is made and after each exact use (`onednn.FilePages`), so
    keeping them adds no memory; otherwise they cost their float32 size.

    The bf16 output is rounded by the matmul itself (PyTorch has no CPU matmul with bf16 inputs
    and a float32 result): for layers whose output feeds the residual stream or attention that
    rounding is the largest error (bench/bench_precision.py).
    """

    def __init__(self, linear: torch.nn.Linear, *, keep_float32: bool = False, packed: bool = False,
                 file_mappings: list[tuple[int, int]] | None = None) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        weight = linear.weight.detach().float()
        #: Whether the bf16 weight is packed for oneDNN (`howsure.backends.transformers.onednn`).
        self.packed = packed
        if packed:
            self.register_buffer("weight", onednn.pack_weight(weight.to(torch.bfloat16)))
        else:
            self.weight = torch.nn.Parameter(weight.to(torch.bfloat16), requires_grad=False)
        # Not persistent: a saved state dict holds each weight once.
        self.register_buffer("float32_weight", weight if keep_float32 else None, persistent=False)
        # Pages of a mapped float32 safetensors file (the bundled model's cache) are read only
        # while computing exactly, and handed back after each use (a few near ties per file).
        self._float32_pages = onednn.FilePages(weight, file_mappings)
        self._float32_pages.release()
        bias = linear.bias
        self.bias = None if bias is None else torch.nn.Parameter(bias.detach().float(), requires_grad=False)
        self.exact = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.exact:
            if self.float32_weight is None:
                raise ModelError("this layer keeps no float32 weights, so it cannot compute exactly")
            out = torch.nn.functional.linear(x, self.float32_weight, self.bias)
            self._float32_pages.release()
            return out
        if self.packed:
            out = onednn.packed_linear(x.to(torch.bfloat16), self.weight).float()
        else:
            out = torch.nn.functional.linear(x.to(torch.bfloat16), self.weight).float()
        return out if self.bias is None else out + self.bias


def packed_precision(layer: torch.nn.Module) -> torch.dtype | None:
    """The dtype ``layer`` computes in with a oneDNN-packed weight right now, or None when it
    does not (see `onednn.fuse_gated_mlps`)."""
    if isinstance(layer, onednn.PackedLinear):
        return layer.compute_dtype
    if isinstance(layer, MixedPrecisionLinear) and layer.packed and not layer.exact:
        return torch.bfloat16
    return None


def mlp_input_projections(model) -> list[tuple[torch.nn.Module, str]]:
    """(mlp block, attribute name) of the input-side linear layers (gate and up, or fc1) of
    every decoder layer's ``mlp``."""
    return [
        (block, child)
        for name, block in model.named_modules() if name.endswith(".mlp")
        for child, layer in block.named_children()
        if isinstance(layer, torch.nn.Linear) and child not in MLP_OUTPUT_PROJECTIONS
    ]


def bf16_mlp_input_projections(model, *, keep_float32: bool = False, packed: bool = False
                               ) -> list[MixedPrecisionLinear]:
    """Run the input-side linear layers of every decoder layer's ``mlp`` in bfloat16 (replaced
    by `MixedPrecisionLinear`), so the float32 residual stream never accumulates bf16 rounding.
    Returns the new layers.

    (Fusing gate and up into one bf16 matmul with a single cast measured no faster on the
    bundled model; see docs/scoring.md.)"""
    places = mlp_input_projections(model)
    if not places:
        raise ModelError("dtype 'mixed' needs decoder layers with an `mlp` block of linear layers; "
                         "use float32 or bfloat16")
    layers = []
    mappings = onednn.clean_file_mappings()  # one look at the process's mappings for all layers
    for block, name in places:
        layer = MixedPrecisionLinear(getattr(block, name), keep_float32=keep_float32, packed=packed,
                                     file_mappings=mappings)
        setattr(block, name, layer)
        layers.append(layer)
    return layers
