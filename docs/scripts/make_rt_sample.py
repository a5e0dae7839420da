"""Build the bundled demo sample: 2,000 sentences (1,000 positive, 1,000 negative) drawn with a
fixed seed from Pang & Lee's sentence polarity dataset v1.0 (CC BY 4.0).

    python docs/scripts/make_rt_sample.py   # writes src/howsure/samples/rt_polarity_2000.csv
"""

import csv
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT.parent / "shared" / "data" / "sentiment" / "rotten_tomatoes"
TARGET = ROOT / "src" / "howsure" / "samples" / "rt_polarity_2000.csv"

rng = random.Random(20261123)
rows = []
for label in ("pos", "neg"):
    lines = [l.strip() for l in (SOURCE / f"rt-polarity.{label}").read_text("utf-8").splitlines() if l.strip()]
    for index in sorted(rng.sample(range(len(lines)), 1000)):
        rows.append((f"rt-{label}-{index}", lines[index], "positive" if label == "pos" else "negative"))
rng.shuffle(rows)
with open(TARGET, "w", newline="", encoding="utf-8") as handle:
    writer = csv.writer(handle)
    writer.writerow(["id", "text", "label"])
    writer.writerows(rows)
print(f"wrote {len(rows)} rows to {TARGET}")
