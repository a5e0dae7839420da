"""Linear layers pre-packed for oneDNN on the CPU, and a fused gated MLP.

``torch.nn.functional.linear`` hands the weight to the matmul library in its plain row-major
layout, and the library re-blocks it on every call. Re-blocking it once at load time
(``torch.ops.mkldnn._reorder_linear_weight``, what PyTorch's inductor does for frozen CPU
models) and calling oneDNN's linear on the packed weight saves that work on every call
(`bench/bench_scoring.py` prints `a @ b` against the packed kernel at the model's shapes).
oneDNN also applies an activation or a multiply to a matmul's output while it is still in cache, so a gated MLP ``down(silu(gate(x)) * up(x))`` becomes three calls with no
separate passes over its largest activations.

Packing copies the weight into oneDNN's layout, so the original must go for memory to stay
flat: `pack_linear_layers` drops it and, when it is a page range of a mapped safetensors file
(how transformers loads the bundled model's cache), hands those pages back to the kernel
(`release_file_pages`), or they would stay resident beside the copy.

Only for the CPU: the backend packs when torch has oneDNN (``torch.backends.mkldnn``) and the
model runs on the CPU; ``prepack=False`` keeps transformers' own layers. A layer whose dtype
oneDNN cannot pack here (bf16 on a CPU with AVX2 alone, `cpu_features.onednn_packs`) keeps
transformers' layer too.
"""

from __future__ import annotations

import ctypes
import functools
import mmap
import os
import sys
from typing import Callable

import torch

from howsure.backends.transformers import cpu_features

_MADV_DONTNEED = 4

PRIMITIVE_CACHE_CAPACITY = "16"
"""How many oneDNN primitives (one per matmul shape) stay cached, unless the user set
``ONEDNN_PRIMITIVE_CACHE_CAPACITY``. Each pass has its own number of tokens, so the default of
1024 keeps hundreds of passes' primitives, each holding memory, for no speed. A pass needs 5
shapes (10 with two passes at once), hence 16. oneDNN reads the variable when it first builds a primitive."""


def available(device: torch.device) -> bool:
    """Whether linear layers on ``device`` can be packed for oneDNN."""
    return (device.type == "cpu" and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def pack_weight(weight: torch.Tensor, tokens_hint: int = 1024) -> torch.Tensor:
    """``weight`` (out x in) re-blocked for oneDNN, in its own dtype. ``tokens_hint`` is the
    typical number of tokens per call, which the layout is tuned for (any number works)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), tokens_hint)


def packed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  activation: str = "none", *, multiply: torch.Tensor | None = None) -> torch.Tensor:
    """``x @ weight.T + bias`` with a weight from `pack_weight`; ``activation`` ("swish" is
    SiLU) is applied to the result, or the result is multiplied by ``multiply`` (same shape),
    inside the matmul. The result has ``x``'s dtype."""
    if multiply is not None:
        return torch.ops.mkldnn._linear_pointwise.binary(x, multiply, weight, bias, "mul")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, activation, [], "")


class PackedLinear(torch.nn.Module):
    """A `torch.nn.Linear` whose weight is packed for oneDNN (`pack_weight`); it computes in
    the weight's dtype, exactly the same function with a different summation order."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", pack_weight(linear.weight))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return packed_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.weight.dtype}"


class FilePages:
    """The whole pages that a tensor's storage occupies in a mapping of a regular file none of
    whose pages were ever written (``Anonymous: 0`` in /proc/self/smaps), found once; empty
    for anything else (ordinary memory; systems other than Linux).

    `release` hands them back to the kernel, so they stop counting as this process's memory.
    A released page read again is read again from the file, unchanged (the mapping holds no
    written page), so whatever still uses the tensor, or shares the mapping, cannot tell; it
    only pays the page faults.

    ``mappings`` is a `clean_file_mappings` snapshot to look the tensor up in; by default one
    is taken for this tensor alone (reading /proc/self/smaps is slow, so code that wraps many
    tensors takes one snapshot and passes it)."""

    def __init__(self, tensor: torch.Tensor, mappings: list[tuple[int, int]] | None = None) -> None:
        self.start = self.length = 0
        if not sys.platform.startswith("linux") or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        start, end = storage.data_ptr(), storage.data_ptr() + storage.nbytes()
        first = -(-start // mmap.PAGESIZE) * mmap.PAGESIZE
        last = end // mmap.PAGESIZE * mmap.PAGESIZE
        if mappings is None:
            mappings = clean_file_mappings()
        if last > first and any(low <= start and end <= high for low, high in mappings):
            self.start, self.length = first, last - first

    def release(self) -> int:
        """Hand the pages back; returns how many bytes."""
        if not self.length:
            return 0
        if _libc().madvise(ctypes.c_void_p(self.start), ctypes.c_size_t(self.length), _MADV_DONTNEED) != 0:
            return 0
        return self.length


@functools.cache
def _libc():
    return ctypes.CDLL(None, use_errno=True)


def release_file_pages(tensor: torch.Tensor, mappings: list[tuple[int, int]] | None = None) -> int:
    """Hand back the pages ``tensor`` occupies in a clean file mapping (see `FilePages`);
    returns the bytes released, 0 for anything that is not such a mapping."""
    return FilePages(tensor, mappings).release()


def clean_file_mappings() -> list[tuple[int, int]]:
    """(start, end) addresses of this process's mappings of regular files with no written page
    (empty where /proc/self/smaps cannot be read)."""
    if not sys.platform.startswith("linux"):
        return []
    try:
        lines = open("/proc/self/smaps").read().splitlines()
    except OSError:
        return []
    clean, current = [], None
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            low, high = (int(v, 16) for v in fields[0].split("-"))
            current = (low, high) if len(fields) > 5 and fields[5].startswith("/") else None
        elif current is not None and fields[0] == "Anonymous:":
            if fields[1] == "0":
                clean.append(current)
            current = None
    return clean


def pack_linear_layers(model: torch.nn.Module) -> list[PackedLinear]:
    """Replace every `torch.nn.Linear` of ``model`` with a `PackedLinear`, releasing each
    original weight's file pages (see the module docstring). Returns the new layers. Layers in
    a dtype oneDNN cannot pack on this CPU (`cpu_features.onednn_packs`) stay as they are.

    That includes the output embedding, the largest matmul left at the answer position. When
    it is tied to the input embedding, the input embedding keeps the original, and looking up the tokens of a pass reads back only pages around their rows; the caller
    can hand those back after each pass (`FilePages`), or over many texts they add up to most
    of the matrix again."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", PRIMITIVE_CACHE_CAPACITY)
    mappings = clean_file_mappings()  # packing writes no page of them, so one look serves all
    packed = []
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not torch.nn.Linear or not cpu_features.onednn_packs(child.weight.dtype):
                continue
            layer = PackedLinear(child)
            setattr(parent, name, layer)
            packed.append(layer)
            release_file_pages(child.weight, mappings)
    return packed


def fuse_gated_mlps(model: torch.nn.Module, precision_of: Callable[[torch.nn.Module], torch.dtype | None]
                    ) -> int:
    """Compute each decoder layer's gated MLP ``down(silu(gate(x)) * up(x))`` with the SiLU and
    the product inside the gate and up matmuls (`packed_linear`). Returns how many were fused.

    ``precision_of(layer)`` says in which dtype a gate or up layer computes with a packed
    weight right now, or None when it cannot (then that MLP runs unfused at that moment, e.g.
    `MixedPrecisionLinear` while it computes exactly). Blocks with biases on gate or up, or an
    activation other than SiLU, are left as they are."""
    fused = 0
    for name, mlp in model.named_modules():
        gate, up, down = (getattr(mlp, n, None) for n in ("gate_proj", "up_proj", "down_proj"))
        if not name.endswith(".mlp") or gate is None or up is None or down is None:
            continue
        if not _is_silu(getattr(mlp, "act_fn", None)):
            continue
        if getattr(gate, "bias", None) is not None or getattr(up, "bias", None) is not None:
            continue
        mlp.forward = _fused_forward(mlp, gate, up, down, precision_of)
        fused += 1
    return fused


def _is_silu(activation) -> bool:
    """Whether ``activation`` computes SiLU (torch's module, transformers' own class or any
    other): checked on values, since the classes vary between libraries and versions."""
    if not isinstance(activation, torch.nn.Module):
        return False
    probe = torch.linspace(-8, 8, 65)
    try:
        with torch.no_grad():
            return bool(torch.allclose(activation(probe), torch.nn.functional.silu(probe), atol=1e-6))
    except Exception:  # an activation that cannot take the probe is not one to fuse
        return False


def _fused_forward(mlp, gate, up, down, precision_of):
    unfused = type(mlp).forward

    def forward(x: torch.Tensor) -> torch.Tensor:
        dtype = precision_of(gate)
        if dtype is None or precision_of(up) != dtype:
            return unfused(mlp, x)
        inner = x.to(dtype)
        hidden = packed_linear(inner, up.weight, multiply=packed_linear(inner, gate.weight, activation="swish"))
        return down(hidden.to(x.dtype))

    return forward
