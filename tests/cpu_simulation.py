"""Make this CPU look like another kind to howsure's capability checks
(`howsure.backends.transformers.cpu_features`), so the bf16 and fallback paths are tested on every machine.

Only howsure's decisions change: the kernels are this machine's, so a simulation may claim no
more than this machine can run (unpacked bf16 runs everywhere, emulated where it must)."""

import torch

from howsure.backends.transformers import cpu_features


def without_native_bf16(monkeypatch, *, packs_bf16: bool = False) -> None:
    """An AVX2-only CPU (a 2-core AMD EPYC): no bf16 instructions, and, unless ``packs_bf16``,
    no oneDNN bf16 packing either (AVX512 without BF16 packs)."""
    flags = {**cpu_features.cpu_flags(), **dict.fromkeys(cpu_features.NATIVE_BF16, False)}
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: flags)
    _packs(monkeypatch, packs_bf16 and cpu_features.onednn_packs(torch.bfloat16))


def with_native_bf16(monkeypatch, *, packs_bf16: bool | None = None) -> None:
    """A CPU with AVX512-BF16. ``packs_bf16``: None keeps this machine's answer (an AVX2 one
    cannot pack bf16 whatever is claimed); False says oneDNN cannot pack bf16 weights."""
    flags = {**cpu_features.cpu_flags(), "avx512_bf16": True}
    monkeypatch.setattr(cpu_features, "cpu_flags", lambda: flags)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    if packs_bf16 is False:
        _packs(monkeypatch, False)


def _packs(monkeypatch, bf16: bool) -> None:
    real = cpu_features.onednn_packs
    monkeypatch.setattr(cpu_features, "onednn_packs", lambda dtype: bf16 if dtype == torch.bfloat16 else real(dtype))
