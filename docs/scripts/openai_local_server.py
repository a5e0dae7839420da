"""The example in docs/backends.md, "OpenAI-compatible servers": start llama-cpp-python's server
on the bundled GGUF (loopback, a throwaway API key), then run `howsure inspect` and `howsure
score --backend openai` against it exactly as a user would, printing what they print.

    python docs/scripts/openai_local_server.py [--texts 40] [--threads 2]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

from howsure.backends.openai_server import llama_cpp_server
from howsure.models import DEFAULT_MODEL, PRESETS, preset_file


def run(command: list[str], env: dict) -> None:
    print("$ " + " ".join(c if " " not in c else repr(c) for c in command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True)
    print(f"({time.perf_counter() - started:.1f} s)\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    key = "sk-local-" + secrets.token_hex(8)
    env = dict(os.environ, OPENAI_API_KEY=key)
    howsure = [sys.executable, "-m", "howsure"]
    with tempfile.TemporaryDirectory() as work, llama_cpp_server(
            preset_file(PRESETS[DEFAULT_MODEL]), alias=DEFAULT_MODEL, api_key=key, threads=args.threads) as url:
        work = Path(work)
        sample = resources.files("howsure.samples").joinpath("rt_polarity_2000.csv").read_text("utf-8")
        rows = list(csv.DictReader(sample.splitlines()))[: args.texts]
        source = work / "reviews.csv"
        with open(source, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", "text", "label"])
            writer.writeheader()
            writer.writerows(rows)
        print(f"llama-cpp-python server on {url} serving {DEFAULT_MODEL} ({args.threads} threads)\n")
        run(howsure + ["inspect", "a gorgeous , witty , seductive movie .", "--backend", "openai",
                       "--base-url", url, "--model", DEFAULT_MODEL, "--top-logprobs", "5"], env)
        out = work / "scored.jsonl"
        run(howsure + ["score", "-i", str(source), "-o", str(out), "--id-column", "id", "--label-column", "label",
                       "--backend", "openai", "--base-url", url, "--model", DEFAULT_MODEL], env)
        first = json.loads(out.read_text("utf-8").splitlines()[0])
        print("first record:", json.dumps({k: first[k] for k in ("id", "prediction", "confidence",
                                                                  "label_mass", "label_mass_bounds")}))
        meta = json.loads((work / "scored.jsonl.meta.json").read_text("utf-8"))
        print("meta server:", json.dumps(meta["server"]).replace(url, "URL"))


if __name__ == "__main__":
    main()
