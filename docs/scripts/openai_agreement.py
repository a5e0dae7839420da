"""Where the OpenAI backend's difference from the transformers backend comes from: its label
probabilities on SST-2 dev texts against llama-cpp-python's local server on the bundled GGUF,
side by side with llama.cpp in-process on the same file (docs/backends.md quotes the table).

The server runs llama.cpp with its defaults: one prompt per decode and an f16 KV cache. The
in-process backend is run twice: at its defaults (32 texts per decode, f32 KV cache) and with
the server's settings (``batch_size=1``, ``kv_type="f16"``).

    PYTHONPATH=src python docs/scripts/openai_agreement.py [--texts 872] [--threads 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from howsure.backends import load_backend
from howsure.backends.openai_server import llama_cpp_server
from howsure.core.task import load_task
from howsure.models import DEFAULT_MODEL, PRESETS, preset_file

SST2_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"


def p_positive(backend, task, texts) -> np.ndarray:
    return np.array([s.probabilities[0] for s in backend.label_scores(task, texts)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=872, help="first N dev texts (872: all)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = pd.read_csv(SST2_DEV, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()[: args.texts]
    task = load_task("sentiment")
    p = {"transformers fp32": p_positive(load_backend(DEFAULT_MODEL, threads=args.threads), task, texts)}
    with llama_cpp_server(preset_file(PRESETS[DEFAULT_MODEL]), alias=DEFAULT_MODEL, threads=args.threads) as url:
        p["openai (server)"] = p_positive(load_backend(DEFAULT_MODEL, "openai", base_url=url), task, texts)
    p["llamacpp default"] = p_positive(load_backend(DEFAULT_MODEL, "llamacpp", threads=args.threads), task, texts)
    p["llamacpp as server"] = p_positive(load_backend(DEFAULT_MODEL, "llamacpp", threads=args.threads, batch_size=1,
                                                      kv_type="f16"), task, texts)
    print(f"P({task.label_names[0]}), {len(texts)} SST-2 dev texts, model {DEFAULT_MODEL} (its GGUF for llama.cpp)")
    print(f"{'':40} {'max |dp|':>9} {'mean |dp|':>9} {'within 0.05':>11} {'same argmax':>11}")
    for a, b in [("openai (server)", "transformers fp32"), ("llamacpp default", "transformers fp32"),
                 ("llamacpp as server", "transformers fp32"), ("openai (server)", "llamacpp default"),
                 ("openai (server)", "llamacpp as server")]:
        difference = np.abs(p[a] - p[b])
        same = np.mean((p[a] > 0.5) == (p[b] > 0.5))
        print(f"{a + ' vs ' + b:40} {difference.max():>9.4f} {difference.mean():>9.4f} "
              f"{np.mean(difference < 0.05):>11.1%} {same:>11.1%}")


if __name__ == "__main__":
    main()
