"""The GPU checks, for a machine with a CUDA GPU (CI has none, so the CUDA tests skip there).

Runs the backend's tests (the CUDA ones included), then `howsure score` and `howsure inspect`
with `--device cuda` and `--device cpu` on the tiny random test model, and compares the two
outputs. Exits non-zero on any failure.

    PYTHONPATH=src:tests python bench/check_cuda.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True)
    print(f"$ {' '.join(args)}  -> exit {result.returncode}")
    if result.returncode:
        print(result.stdout[-3000:], result.stderr[-3000:])
    return result


def main() -> int:
    import torch

    if not torch.cuda.is_available():
        print("no CUDA GPU visible to torch; nothing to check")
        return 1
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}")
    failures = 0
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_backend_transformers.py", "-rs")
    print(tests.stdout.strip().splitlines()[-1])
    failures += tests.returncode != 0

    from conftest import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_model(tmp_path / "tiny")
        texts = tmp_path / "texts.csv"
        texts.write_text("text\n" + "\n".join(f"text number {i}, rather good" for i in range(40)) + "\n")
        probabilities = {}
        for device in ("cuda", "cpu"):
            out = tmp_path / f"{device}.jsonl"
            result = run("-m", "howsure", "score", "-i", str(texts), "-o", str(out), "-m", str(model),
                         "--device", device)
            failures += result.returncode != 0
            if result.returncode == 0:
                probabilities[device] = [json.loads(line)["probabilities"] for line in out.read_text().splitlines()]
        if len(probabilities) == 2:
            gap = max(abs(a[k] - b[k]) for a, b in zip(probabilities["cuda"], probabilities["cpu"]) for k in a)
            print(f"score: {len(probabilities['cuda'])} texts, max |p_cuda - p_cpu| = {gap:.2e}")
            failures += not gap < 1e-4
        inspect = run("-m", "howsure", "inspect", "rather good", "-m", str(model), "--device", "cuda")
        failures += inspect.returncode != 0
        print(inspect.stdout[-1500:])
    print("all CUDA checks passed" if not failures else f"{failures} CUDA check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
