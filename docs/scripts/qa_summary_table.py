"""Print the Markdown table of docs/answers.md from `howsure qa-report --json` summaries.

    python docs/scripts/qa_summary_table.py nq-summary.json [closed-summary.json ...]

One row per estimator: AUROC raw and calibrated (cross-fitted), ECE and RMS calibration error raw and
calibrated, each with its 95 % bootstrap interval as the summary holds it, and whether a
threshold was certified; then accuracy and the probe's chosen layer per outer fold.
"""

from __future__ import annotations

import json
import sys
from collections import Counter


def cell(metric: dict, digits: int = 3) -> str:
    value, low, high = metric["value"], metric.get("low"), metric.get("high")
    if value is None:
        return "n/a"
    if low is None or high is None:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table(summary: dict) -> str:
    first = summary["estimators"][0]
    accuracy = first["raw"]["accuracy"]
    lines = [f"{summary['estimators'][0]['n_items']} questions, accuracy {cell(accuracy)}",
             "",
             "| estimator | AUROC raw | AUROC calibrated | ECE raw | ECE calibrated | RMS raw | RMS calibrated | auto at target |",
             "|---|---|---|---|---|---|---|---|"]
    for est in summary["estimators"]:
        raw, cal = est["raw"], est["calibrated"]
        cert = est.get("certification") or {}
        auto = f"{cert['automation_rate']:.1%}" if cert.get("certified") else "none"
        flags = f" ({', '.join(est['flags'])})" if est.get("flags") else ""
        lines.append(f"| {est['name']}{flags} | {cell(raw['auroc'])} | {cell(cal['auroc'])} | {cell(raw['ece'])} | {cell(cal['ece'])} | "
                     f"{cell(raw['rms_calibration_error'])} | {cell(cal['rms_calibration_error'])} | {auto} |")
    probe = summary.get("probe")
    if probe:
        notes = [n for n in summary.get("notes", []) if n.startswith("hidden_state_probe")]
        per_fold = notes[0].rsplit(": ", 1)[-1] if notes else str(probe.get("chosen_layers"))
        common, count = Counter(json.loads(per_fold)).most_common(1)[0] if per_fold.startswith("[") else (None, 0)
        lines.append("")
        lines.append(f"probe layer chosen inside each outer fold's training part: {per_fold}"
                     + (f" (most often {common}, {count} of 5 folds)" if common is not None else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as handle:
            print(table(json.load(handle)))
        print()
