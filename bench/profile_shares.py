"""Where the serve process's web side spends its CPU, from a py-spy profile.

Record the serve process while `bench/bench_service.py` runs its service phases, then read the
profile with this script: it prints, for the threads that are not the model's, the share of their
samples spent inside each of the busiest functions (inclusive, so nested shares overlap).

    py-spy record -p $(pgrep -f "howsure serve") --rate 250 -d 40 --threads --nonblocking \\
        --format raw -o serve.txt
    python bench/profile_shares.py serve.txt

A sample belongs to the model when its stack passes through ``Service._score`` (the batch
function); idle samples are not recorded without py-spy's ``--idle``.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path


def frame_name(frame: str) -> str:
    """``function (path/file.py:line)`` -> ``function file.py``."""
    name, _, where = frame.partition(" (")
    return f"{name} {where.split(':')[0].rsplit('/', 1)[-1]}" if where else name


def shares(lines: list[str]) -> tuple[Counter, int, int]:
    inside: Counter = Counter()
    web = model = 0
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack:
            continue
        samples = int(count)
        frames = [frame_name(frame) for frame in stack.split(";")[1:]]  # the first names the thread
        if any(frame.startswith("_score state.py") for frame in frames):
            model += samples
            continue
        web += samples
        for name in set(frames):
            inside[name] += samples
    return inside, web, model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("profile", type=Path, help="py-spy's --format raw output.")
    parser.add_argument("--top", type=int, default=30, help="How many functions to print.")
    args = parser.parse_args()
    inside, web, model = shares(args.profile.read_text().splitlines())
    print(f"{model} samples in the model (Service._score), {web} on the web side")
    for name, samples in inside.most_common(args.top):
        print(f"{samples / max(web, 1):6.1%}  {name}")


if __name__ == "__main__":
    main()
