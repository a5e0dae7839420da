"""Every number and figure of docs/evaluation.md, from the public write-up's cached results.

    PYTHONPATH=src python docs/scripts/evaluation_docs.py [--out out/evaluation-docs] [--screenshot]

Runs `howsure evaluate` (as a subprocess, exactly the commands the page shows) on the 1,000
cached Llama-3.1-8B-Instruct sentiment results, base and LoRA fine-tuned, prints the page's
Markdown tables from the written summary.json files, and writes its figures to docs/images/.
With --screenshot it also photographs the base report in headless Chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT.parent / "shared/data/sentiment/seed_cwc/results"
IMAGES = ROOT / "docs/images"

# name -> (input file, extra options); each becomes `howsure evaluate INPUT --out OUT/name ...`
RUNS = {
    "base-isotonic": ("llama31_8b_base_results.json", ["--bins", "20", "--calibrator", "isotonic"]),
    "base-platt": ("llama31_8b_base_results.json", ["--bins", "20", "--calibrator", "platt"]),
    "base-auto": ("llama31_8b_base_results.json", ["--bins", "20"]),
    "base-distribution": ("llama31_8b_base_results.json",
                          ["--bins", "20", "--label-column", "expected", "--prediction-column", "prediction",
                           "--calibrator", "platt"]),
    "base-split": ("llama31_8b_base_results.json", ["--bins", "20", "--calibrator", "platt", "--test-size", "0.5"]),
    "finetuned-auto": ("llama31_8b_finetuned_results.json", ["--bins", "20"]),
}
PUBLIC = {  # the write-up's own metrics block, fitted and scored on the same 1,000 items
    "base": {"accuracy": 0.722, "ece": 0.17290971321153553, "mce": 0.3046279210698566,
             "platt_ece": 0.04842280776399517, "isotonic_ece": 8.493206138382449e-18},
    "finetuned": {"accuracy": 0.924, "ece": 0.01790656497816171, "mce": 0.4996569180415804,
                  "platt_ece": 0.046547811862002936, "isotonic_ece": 3.552713678800501e-17},
}


def command(name: str, out: Path) -> list[str]:
    source, options = RUNS[name]
    return ["howsure", "evaluate", str(Path("../shared/data/sentiment/seed_cwc/results") / source),
            "--out", str(out / name), *options]


def run(name: str, out: Path) -> dict:
    args = command(name, out)
    print("$", " ".join(args), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "110"}
    completed = subprocess.run([sys.executable, "-m", "howsure", *args[1:]], cwd=ROOT, env=env,
                               capture_output=True, text=True, check=True)
    print(completed.stdout)
    return json.loads((out / name / "summary.json").read_text())


def cell(entry: dict | None) -> str:
    if not entry or entry.get("value") is None:
        return "–"
    return f"{entry['value']:.3f} [{entry['low']:.3f}, {entry['high']:.3f}]"


def table(summaries: dict[str, dict]) -> None:
    names = ["accuracy", "ece", "ece_equal_mass", "rms_calibration_error", "mce", "brier", "nll", "auroc", "aurc"]
    print("| run | column | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for run_name, summary in summaries.items():
        for column in summary["metrics"]:
            values = column["values"]
            print(f"| {run_name} | {column['title']} | " + " | ".join(cell(values.get(n)) for n in names) + " |")
    print()
    for run_name, summary in summaries.items():
        calibration = summary["calibration"]
        print(f"- {run_name}: {calibration['mode']} mode; {calibration['scheme']['description']}"
              + (f"; auto chose {calibration['chosen']}" if calibration.get("chosen") else ""))
        for note in summary.get("notes", []):
            print(f"  - {note}")


def figures(summaries: dict[str, dict]) -> None:
    from howsure.report import plots

    IMAGES.mkdir(parents=True, exist_ok=True)
    reliability = next(p for p in summaries["base-auto"]["plots"] if p["key"] == "reliability")
    display = plots.display_from_dict(reliability["display"]).plot()
    (IMAGES / "evaluation_llama_reliability.png").write_bytes(plots.figure_png(display.figure_, dpi=80))

    raw_panels = []
    for name, title in (("base-auto", "Llama-3.1-8B base, raw"), ("finetuned-auto", "after LoRA fine-tune, raw")):
        panel = next(p for p in summaries[name]["plots"] if p["key"] == "reliability")["display"]["panels"][0]
        raw_panels.append(plots.display_from_dict({**panel, "title": title}))
    comparison = plots.side_by_side(*raw_panels).plot()
    (IMAGES / "evaluation_base_vs_finetuned.png").write_bytes(plots.figure_png(comparison.figure_, dpi=80))

    sample_size = next(p for p in summaries["base-auto"]["plots"] if p["key"] == "sample_size")
    display = plots.display_from_dict(sample_size["display"]).plot()
    (IMAGES / "evaluation_sample_size.png").write_bytes(plots.figure_png(display.figure_, dpi=80))
    print("figures written to", IMAGES)


def screenshot(report: Path) -> None:
    from playwright.sync_api import sync_playwright
    from PIL import Image

    target = IMAGES / "evaluation_report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"])
        page = browser.new_context(viewport={"width": 1280, "height": 1500}, offline=True).new_page()
        page.goto(report.resolve().as_uri())
        page.screenshot(path=str(target))
        browser.close()
    image = Image.open(target).convert("RGB")
    image.resize((960, 1125)).quantize(colors=128).save(target, optimize=True)
    print("screenshot written to", target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out/evaluation-docs")
    parser.add_argument("--screenshot", action="store_true")
    args = parser.parse_args()
    summaries = {name: run(name, args.out) for name in RUNS}
    print("public write-up (fitted and scored on the same items):", json.dumps(PUBLIC, indent=1))
    table(summaries)
    figures(summaries)
    if args.screenshot:
        screenshot(args.out / "base-auto/report.html")


if __name__ == "__main__":
    main()
