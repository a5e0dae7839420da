"""How far the in-process llama.cpp backend is from the transformers backend (float32) on the
first 200 SST-2 dev texts, at three llama.cpp batch sizes (docs/backends.md quotes it).

    PYTHONPATH=src python docs/scripts/llamacpp_agreement.py [--texts 200] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from howsure.backends import load_backend
from howsure.core.task import load_task

SST2_DEV = Path(__file__).resolve().parents[3] / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    texts = pd.read_csv(SST2_DEV, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()[: args.texts]
    task = load_task("sentiment")
    reference = np.array([s.probabilities for s in
                          load_backend("smollm2-135m", threads=args.threads).label_scores(task, texts)])
    print(f"llama.cpp vs transformers float32, P({task.label_names[0]}), {len(texts)} SST-2 dev texts")
    print(f"{'batch size':>10} {'max |dp|':>9} {'mean |dp|':>9} {'within 0.05':>11} {'same argmax':>11} {'seconds':>8}")
    for batch_size in (1, 8, 32):
        start = time.perf_counter()
        backend = load_backend("smollm2-135m", "llamacpp", threads=args.threads, batch_size=batch_size)
        ours = np.array([s.probabilities for s in backend.label_scores(task, texts)])
        seconds = time.perf_counter() - start
        difference = np.abs(ours - reference)[:, 0]
        print(f"{batch_size:>10} {difference.max():>9.4f} {difference.mean():>9.4f} {np.mean(difference < 0.05):>11.1%} "
              f"{np.mean(ours.argmax(1) == reference.argmax(1)):>11.1%} {seconds:>8.1f}")


if __name__ == "__main__":
    main()
