"""Build the demo's bundled training sample: 400 sentences (200 positive, 200 negative) drawn
with a fixed seed from Pang & Lee's sentence polarity dataset v1.0 (CC BY 4.0), none of them in
the 2,000-sentence demo sample `rt_polarity_2000.csv` (the calibration and test items).

A line is left out when its text hashes like a sample sentence (the fit-item hash that
calibrators and adapters record), and also when it equals one as lower-cased letters and digits,
so near-copies that differ only in case or punctuation stay out of training too.

    python docs/scripts/make_rt_train_sample.py   # writes src/howsure/samples/rt_polarity_train_400.csv
"""

import csv
import hashlib
import random
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT.parent / "shared" / "data" / "sentiment" / "rotten_tomatoes"
SAMPLES = ROOT / "src" / "howsure" / "samples"
HELD_OUT = SAMPLES / "rt_polarity_2000.csv"
TARGET = SAMPLES / "rt_polarity_train_400.csv"
PER_LABEL = 200


def content_hash(text: str) -> str:
    # = howsure.calibration.fitting.item_hashes([text], "text")[0], without importing howsure
    return hashlib.sha256(f"text:{text}".encode()).hexdigest()[:16]


def letters_and_digits(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


with open(HELD_OUT, newline="", encoding="utf-8") as handle:
    held_out = [row["text"] for row in csv.DictReader(handle)]
held_hashes = {content_hash(text) for text in held_out}
held_letters = {letters_and_digits(text) for text in held_out}

rng = random.Random(20261202)
rows = []
chosen: set[str] = set()
for label in ("pos", "neg"):
    lines = [l.strip() for l in (SOURCE / f"rt-polarity.{label}").read_text("utf-8").splitlines()]
    eligible = [i for i, line in enumerate(lines)
                if line and content_hash(line) not in held_hashes and letters_and_digits(line) not in held_letters]
    picked = 0
    for index in rng.sample(eligible, len(eligible)):
        if picked == PER_LABEL:
            break
        if letters_and_digits(lines[index]) in chosen:  # a sentence in both files, or twice in one
            continue
        chosen.add(letters_and_digits(lines[index]))
        rows.append((f"rt-{label}-{index}", lines[index], "positive" if label == "pos" else "negative"))
        picked += 1
rng.shuffle(rows)
with open(TARGET, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "text", "label"])
    writer.writerows(rows)
print(f"wrote {len(rows)} rows to {TARGET}")
