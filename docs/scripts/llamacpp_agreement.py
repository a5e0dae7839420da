"""How far the in-process llama.cpp backend is from the transformers backend (float32) on the
first 200 SST-2 dev texts, at three llama.cpp batch sizes and with the other llama.cpp settings
that change its numerics without converting the GGUF (docs/backends.md quotes the table).

    PYTHONPATH=src python docs/scripts/llamacpp_agreement.py [--texts 200] [--threads 2]

Rows after the batch sizes change one setting of the default (32 texts per decode, f32 KV
cache): the KV cache in f16 (``kv_type``), flash attention on, one thread, llama.cpp's physical
batch (``n_ubatch``) at 512 instead of ``batch_tokens`` (2048), and the CPU backend's repacked
weight layouts off (``use_extra_bufts``). The backend exposes only ``kv_type``; the others are set
here on llama.cpp's own parameters, the context rebuilt with them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from howsure.backends import load_backend
from howsure.backends.llamacpp_cpu import model_defaults
from howsure.core.task import load_task

SST2_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"


def llamacpp_backend(threads: int, batch_size: int = 32, kv_type: str = "f32", flash_attn: bool = False,
                     n_ubatch: int | None = None, repack: bool = True):
    """The backend with llama.cpp settings it does not expose set on llama.cpp's parameters."""
    import llama_cpp
    from llama_cpp import _internals

    # the CPU backend's repacked weight layouts (off anyway where llama.cpp reports AMX)
    with model_defaults(llama_cpp, use_extra_bufts=repack):
        backend = load_backend("smollm2-135m", "llamacpp", threads=threads, batch_size=batch_size, kv_type=kv_type)
    if flash_attn or n_ubatch:
        params = type(backend._ctx.params).from_buffer_copy(backend._ctx.params)
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else params.flash_attn_type
        params.n_ubatch = n_ubatch or params.n_ubatch
        backend._ctx = _internals.LlamaContext(model=backend.llm._model, params=params, verbose=False)
    return backend


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = pd.read_csv(SST2_DEV, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()[: args.texts]
    task = load_task("sentiment")
    reference = np.array([s.probabilities for s in
                          load_backend("smollm2-135m", threads=args.threads).label_scores(task, texts)])
    rows = [("batch size 1", dict(batch_size=1)), ("batch size 8", dict(batch_size=8)),
            ("batch size 32 (default)", {}), ("KV cache f16", dict(kv_type="f16")),
            ("flash attention on", dict(flash_attn=True)), ("1 thread", dict(threads=1)),
            ("n_ubatch 512", dict(n_ubatch=512)), ("weight repacking off", dict(repack=False))]
    print(f"llama.cpp vs transformers float32, P({task.label_names[0]}), {len(texts)} SST-2 dev texts")
    print(f"{'llama.cpp setting':24} {'max |dp|':>9} {'mean |dp|':>9} {'within 0.05':>11} {'same argmax':>11} "
          f"{'seconds':>8}")
    for name, setting in rows:
        start = time.perf_counter()
        backend = llamacpp_backend(**{"threads": args.threads, **setting})
        ours = np.array([s.probabilities for s in backend.label_scores(task, texts)])
        seconds = time.perf_counter() - start
        difference = np.abs(ours - reference)[:, 0]
        print(f"{name:24} {difference.max():>9.4f} {difference.mean():>9.4f} {np.mean(difference < 0.05):>11.1%} "
              f"{np.mean(ours.argmax(1) == reference.argmax(1)):>11.1%} {seconds:>8.1f}", flush=True)


if __name__ == "__main__":
    main()
