"""llama.cpp's AMX weight repacking, kept off unless asked for.

Where ggml is compiled with AMX (a native build, as pip's build of llama-cpp-python is, on a
Xeon of the Sapphire Rapids generation or later) and reports ``AMX_INT8 = 1``, llama.cpp moves
the quantised weights into an "AMX" buffer at load time, one of its "extra buffer types", and
multiplies them there. With llama-cpp-python 0.3.36 on the 2-core AMX Xeon of our CI, the first
decode after that segfaults, taking the Python process with it, for every weight type tried:
the bundled Q4_1 and the same model requantised to Q4_0, Q8_0 and Q4_K
(`docs/scripts/llamacpp_amx_check.py` loads each in a child process and prints what happens).

A crash is worse than a slower path, so wherever llama.cpp reports AMX, the models howsure loads
(in-process, `howsure.backends.llamacpp`, and the local server of
`howsure.backends.openai_server`) are loaded with ``use_extra_bufts`` off, and a
`LlamaCppAmxWarning` says so. The weights are then multiplied by the same AVX512/AVX2 kernels
as on a CPU without AMX. ``HOWSURE_LLAMACPP_AMX=1`` lets llama.cpp repack anyway, for builds
where the AMX path works.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Iterator, Mapping

#: The environment variable that lets llama.cpp repack weights for AMX anyway ("1").
AMX_OPT_IN = "HOWSURE_LLAMACPP_AMX"

_PATCH_LOCK = threading.RLock()


class LlamaCppAmxWarning(UserWarning):
    """llama.cpp reports AMX, whose weight repacking crashed here, so models load without it."""


def amx_reported(system_info: str) -> bool:
    """Whether llama.cpp's ``llama_print_system_info()`` line says its AMX kernels are in use."""
    return "AMX_INT8 = 1" in system_info


def extra_buffers_notice(system_info: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """Why llama.cpp's extra buffer types are turned off here, or None to leave them on: they
    are off where llama.cpp reports AMX, unless ``HOWSURE_LLAMACPP_AMX=1``."""
    if not amx_reported(system_info):
        return None
    opt_in = environ.get(AMX_OPT_IN, "")
    if opt_in == "1":
        return None
    if opt_in not in ("", "0"):
        # A typo must not turn on a path that can crash; say what was read instead.
        return (f"{AMX_OPT_IN}={opt_in!r} is neither 1 nor 0; llama.cpp loads the model without its AMX "
                "weight repacking")
    return (f"llama.cpp reports AMX here; its AMX weight repacking crashes llama-cpp-python 0.3.36 on "
            f"first use, so the model loads without it (AVX512/AVX2 kernels instead; {AMX_OPT_IN}=1 to try it)")


@contextlib.contextmanager
def model_defaults(llama_cpp, **fields) -> Iterator[None]:
    """Models that ``llama_cpp.Llama`` loads inside this block get ``fields`` set on their model
    parameters (``use_extra_bufts=False`` ...).

    ``Llama`` takes no model-parameters argument: it fills its parameters from
    ``llama_cpp.llama_cpp.llama_model_default_params()`` (not the package's re-export) and loads
    the weights in its constructor, so the block swaps that function for one that sets
    ``fields``. The swap is process-wide for the block's duration (a lock keeps two blocks in
    different threads from interleaving; blocks nest in one thread)."""
    module = llama_cpp.llama_cpp
    with _PATCH_LOCK:
        original = module.llama_model_default_params

        def defaults_with_fields():
            params = original()
            for name, value in fields.items():
                setattr(params, name, value)
            return params

        module.llama_model_default_params = defaults_with_fields
        try:
            yield
        finally:
            module.llama_model_default_params = original


@contextlib.contextmanager
def without_amx_repacking(llama_cpp, *, stacklevel: int = 3) -> Iterator[bool]:
    """Models that ``llama_cpp.Llama`` loads inside this block skip the extra buffer types where
    `extra_buffers_notice` says so (`model_defaults` with ``use_extra_bufts=False``, and a
    `LlamaCppAmxWarning`); yields whether they do."""
    notice = extra_buffers_notice(llama_cpp.llama_print_system_info().decode("utf-8", "replace"))
    if notice is None:
        yield False
        return
    warnings.warn(LlamaCppAmxWarning(notice), stacklevel=stacklevel)
    with model_defaults(llama_cpp, use_extra_bufts=False):
        yield True


def load_llama(*args, **kwargs):
    """``llama_cpp.Llama(*args, **kwargs)`` inside `without_amx_repacking`."""
    import llama_cpp

    with without_amx_repacking(llama_cpp, stacklevel=4):
        return llama_cpp.Llama(*args, **kwargs)


__all__ = ["AMX_OPT_IN", "LlamaCppAmxWarning", "amx_reported", "extra_buffers_notice", "load_llama",
           "model_defaults", "without_amx_repacking"]
