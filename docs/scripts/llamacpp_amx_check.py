"""Does llama.cpp's AMX weight repacking work on this machine? For the bundled Q4_1 GGUF and the
same model requantised to Q4_0, Q8_0 and Q4_K (llama.cpp's own quantiser), score two texts with
the llamacpp backend in a child process, once as howsure loads it (repacking off where
llama.cpp reports AMX) and once with ``HOWSURE_LLAMACPP_AMX=1``, and print how each child ended
(`howsure.backends.llamacpp_cpu`, docs/backends.md).

    PYTHONPATH=src python docs/scripts/llamacpp_amx_check.py
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

#: ggml file types (llama.cpp's ``LLAMA_FTYPE_MOSTLY_*``) to requantise the bundled model to
#: (Q4_K falls back to Q5_0 for the many matrices whose rows, 576 wide, are not whole K blocks).
REQUANTISED = {"Q4_0": 2, "Q8_0": 7, "Q4_K": 15}

CHILD = """
import sys, warnings
warnings.simplefilter("ignore")
from howsure.backends import load_backend
from howsure.core.task import load_task
backend = load_backend(sys.argv[1], "llamacpp", threads=2)
scores = backend.label_scores(load_task("sentiment"), ["A gem of a film.", "Dull and far too long."])
print(f"ok, P(positive) {scores[0].probabilities[0]:.3f} {scores[1].probabilities[0]:.3f}"
      + (" (repacking off)" if backend.amx_repacking_off else ""))
"""


def requantise(source: Path, target: Path, ftype: int) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.allow_requantize, params.nthread = ftype, True, 2
    # The quantiser logs every tensor to stderr; only its result matters here.
    saved = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
        try:
            status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params))
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    if status != 0:
        raise SystemExit(f"llama.cpp could not requantise {source} to file type {ftype}")


def how_it_ended(gguf: Path, amx: bool) -> str:
    env = {**os.environ, "HOWSURE_LLAMACPP_AMX": "1" if amx else "0"}
    child = subprocess.run([sys.executable, "-c", CHILD, str(gguf)], env=env, capture_output=True, text=True,
                           timeout=600)
    if child.returncode < 0:
        return f"crashed: {signal.Signals(-child.returncode).name}"
    if child.returncode:
        return f"exit {child.returncode}: {child.stderr.strip().splitlines()[-1:]}"
    return child.stdout.strip()


def main() -> None:
    import llama_cpp

    from howsure.models import DEFAULT_MODEL, PRESETS, preset_file

    print(f"llama-cpp-python {llama_cpp.__version__}: {llama_cpp.llama_print_system_info().decode().strip()}")
    bundled = preset_file(PRESETS[DEFAULT_MODEL])
    with tempfile.TemporaryDirectory() as work:
        files = {"Q4_1 (bundled)": bundled}
        for name, ftype in REQUANTISED.items():
            files[name] = Path(work) / f"model-{name}.gguf"
            requantise(bundled, files[name], ftype)
        print(f"{'weights':16} {'as howsure loads it':45} HOWSURE_LLAMACPP_AMX=1")
        for name, path in files.items():
            print(f"{name:16} {how_it_ended(path, amx=False):45} {how_it_ended(path, amx=True)}", flush=True)


if __name__ == "__main__":
    main()
