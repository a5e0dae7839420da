"""What this CPU can compute in bfloat16, decided in one place: by the backend when it picks a
dtype and packs layers, by `bench/bench_scoring.py` when it measures kernels.

Two separate questions:

* **Can oneDNN pack a bf16 weight** (`onednn_packs`)? Its bf16 path needs avx_ne_convert, or
  avx512bw, avx512vl and avx512dq; without them ``_reorder_linear_weight`` raises (an AVX2-only
  CPU such as a 2-core AMD EPYC). Answered by trying it on a tiny weight, so it honours
  whatever limits oneDNN at run time (``ONEDNN_MAX_CPU_ISA``).
* **Does bf16 compute natively** (`bf16_support`)? Only with instructions that multiply bf16
  (AMX-BF16, AVX512-BF16) or convert it in one step (AVX-NE-CONVERT). Without them bf16 is
  emulated, on AVX2 and on AVX512 without BF16 alike (``ONEDNN_MAX_CPU_ISA=AVX512_CORE``
  simulates the latter): `bench/bench_scoring.py` prints the float32 and bf16 matmul rates on
  the machine it runs on. Either way float32 is faster, so the backend computes in float32 there and says
  so in one line (`Bf16FallbackWarning`).
"""

from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass

import torch

RELEVANT_FLAGS = ("avx2", "avx512_f", "avx512_bw", "avx512_vl", "avx512_dq", "avx512_vnni", "avx512_bf16",
                  "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "avx_vnni", "avx_ne_convert")
"""The instruction sets that decide which matmul kernels run fast here (`bench/bench_scoring.py`
prints them)."""

NATIVE_BF16 = ("amx_bf16", "avx512_bf16", "avx_ne_convert")
"""Instruction sets with which oneDNN computes bf16 without emulating it, best first."""

#: /proc/cpuinfo spells some flags differently from torch's `torch.cpu.get_capabilities`.
_CPUINFO_NAMES = {"avx512f": "avx512_f", "avx512bw": "avx512_bw", "avx512vl": "avx512_vl", "avx512dq": "avx512_dq",
                  "avx512_vnni": "avx512_vnni", "avx512_bf16": "avx512_bf16", "avx512_fp16": "avx512_fp16",
                  "amx_tile": "amx_tile", "amx_bf16": "amx_bf16", "amx_int8": "amx_int8", "avx2": "avx2",
                  "avx_vnni": "avx_vnni", "avx_ne_convert": "avx_ne_convert"}

#: Which native bf16 instruction sets oneDNN may use under each ``ONEDNN_MAX_CPU_ISA`` value
#: (its ISA names; the AVX10 names are aliases of the AVX512 ones). Unlisted values: no limit.
_ALLOWED_UNDER_ISA_LIMIT = {
    **dict.fromkeys(("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"), ()),
    "AVX2_VNNI_2": ("avx_ne_convert",),
    **dict.fromkeys(("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512"), ("avx512_bf16",)),
    **dict.fromkeys(("AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16", "AVX10_1_512_AMX_FP16"),
                    ("amx_bf16", "avx512_bf16")),
}


class Bf16FallbackWarning(UserWarning):
    """A bf16 mode was asked for on a CPU that would emulate bf16, so the backend computes in
    float32; the message names the missing instruction sets."""


@dataclass(frozen=True)
class Bf16Support:
    """What bf16 compute does on this CPU. ``native``: the instruction set oneDNN multiplies
    bf16 with, or None when bf16 is emulated. ``packs``: whether oneDNN can pack bf16 weights
    (`onednn_packs`). ``missing``: the instruction sets lacking for native bf16, for a notice
    ("" when nothing is)."""

    native: str | None
    packs: bool
    missing: str


@functools.cache
def cpu_flags() -> dict[str, bool]:
    """The `RELEVANT_FLAGS` this CPU has, from torch's cpuinfo (`torch.cpu.get_capabilities`),
    else from /proc/cpuinfo; all False where neither can be read."""
    flags = dict.fromkeys(RELEVANT_FLAGS, False)
    get_capabilities = getattr(torch.cpu, "get_capabilities", None)
    if get_capabilities is not None:
        try:
            capabilities = get_capabilities()
            return {name: bool(capabilities.get(name, False)) for name in RELEVANT_FLAGS}
        except Exception:  # an older or odd build: read the kernel's list instead
            pass
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return flags
    for name in line.partition(":")[2].split():
        if name in _CPUINFO_NAMES:
            flags[_CPUINFO_NAMES[name]] = True
    return flags


def onednn_isa_limit() -> str | None:
    """The ISA oneDNN is limited to by the environment (``ONEDNN_MAX_CPU_ISA``, formerly
    ``DNNL_MAX_CPU_ISA``), upper-cased, or None."""
    value = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    return value.strip().upper() if value and value.strip() else None


def torch_cpu_capability() -> str:
    """The vector ISA torch's own kernels were dispatched to ("AVX2", "AVX512", ...)."""
    try:
        return torch.backends.cpu.get_cpu_capability()
    except Exception:  # not a CPU build torch can describe
        return "unknown"


@functools.cache
def onednn_packs(dtype: torch.dtype) -> bool:
    """Whether oneDNN packs a ``dtype`` weight and multiplies with it here: tried once on a
    tiny one, so a CPU (or an ``ONEDNN_MAX_CPU_ISA`` limit) without the kernel answers False
    instead of raising later on the model's layers."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    try:
        weight = torch.ops.mkldnn._reorder_linear_weight(torch.ones(8, 16, dtype=dtype), 4)
        out = torch.ops.mkldnn._linear_pointwise(torch.ones(4, 16, dtype=dtype), weight, None, "none", [], "")
        return bool(out.shape == (4, 8) and torch.all(out == 16))
    except Exception:  # RuntimeError "bf16 path needs the cpu support ..." and kin
        return False


def bf16_support() -> Bf16Support:
    """What bf16 does on this CPU (see the module docstring)."""
    flags = cpu_flags()
    limit = onednn_isa_limit()
    allowed = _ALLOWED_UNDER_ISA_LIMIT.get(limit, NATIVE_BF16) if limit else NATIVE_BF16
    native = next((name for name in NATIVE_BF16 if flags.get(name) and name in allowed), None)
    missing = ""
    if native is None:
        limited = f" usable under ONEDNN_MAX_CPU_ISA={limit}" if limit and any(flags.get(n) for n in NATIVE_BF16) else ""
        missing = f"none of {', '.join(NATIVE_BF16)}{limited}"
    return Bf16Support(native=native, packs=onednn_packs(torch.bfloat16), missing=missing)


def describe() -> str:
    """One line for benchmarks and logs: the relevant flags this CPU has, torch's capability and
    any oneDNN limit."""
    flags = cpu_flags()
    present = " ".join(name for name in RELEVANT_FLAGS if flags.get(name)) or "none of them"
    limit = onednn_isa_limit()
    return (f"cpu flags: {present}; torch cpu capability {torch_cpu_capability()}"
            + (f"; ONEDNN_MAX_CPU_ISA={limit}" if limit else ""))


def cpu_dtype(dtype: str) -> str:
    """The dtype the backend computes in on this CPU when ``dtype`` is asked for: a bf16 mode
    ("mixed", "bfloat16") only where bf16 is native, else "float32" with a
    `Bf16FallbackWarning` (float32 is exact and, there, the faster of the two)."""
    if dtype == "float32":
        return dtype
    support = bf16_support()
    if support.native is None:
        warnings.warn(Bf16FallbackWarning(
            f"dtype {dtype!r} computes in float32 on this CPU: it has {support.missing}, so bf16 would "
            "be emulated, slower than float32"), stacklevel=3)
        return "float32"
    return dtype
