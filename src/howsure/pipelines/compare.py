"""Before / after: a base and a fine-tuned model's scores on the same held-out items, side by side.

Each side goes through the evaluation pipeline (`howsure.evaluation.evaluate`) with the same
settings, so every metric and interval is exactly what ``howsure evaluate`` reports on that file
alone; each side's certified automation share comes from `howsure.fit_certify.certify_with_split`
(calibrator fitted on one part, threshold certified on the other) at the same target and delta.
The two files must hold the same items: the multisets of their text hashes (as calibrator
fingerprints hash them) must be equal, and the gold labels of equal texts too.

Summary layout (``format = "howsure.comparison"``)::

    title, created, howsure_version, command, settings, items{n_items, n_unique_texts, labels}
    sides {base, tuned}: {name, path, adapter, calibration, metrics (evaluate's columns), headline,
                          certificate, targets, confusion}
    changes   {raw, calibrated}: metric -> tuned minus base
    groups    [{by, rows: [{group, n, base{...}, tuned{...}}]}]   (when categories are known)
    plots     [{key, title, caption, display}]
    notes     [str]
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from howsure import __version__
from howsure.calibration.fitting import item_hashes
from howsure.core.scored import ScoredItems
from howsure.core.validation import check_delta, check_target
from howsure.decisions.policy_certification import certify_policy
from howsure.decisions.recalibration import certify_with_split
from howsure.errors import DataError
from howsure.io.scored_tables import read_scores_table, scored_items_from_frame
from howsure.io.tables import read_table
from howsure.pipelines.evaluate import EvaluationConfig, evaluate
from howsure.pipelines.score_job import meta_path
from howsure.report import json_ready, plots, write_summary
from howsure.report.comparison import render_comparison_html

SUMMARY_FORMAT = "howsure.comparison"
SUMMARY_VERSION = 1
SIDES = ("base", "tuned")
SIDE_NAMES = {"base": "base", "tuned": "fine-tuned"}
HEADLINE = ("accuracy", "ece", "brier", "auroc")
DEFAULT_TARGETS = (0.8, 0.85, 0.9, 0.95)
GROUP_COLUMNS = ("category", "domain")


@dataclass(frozen=True)
class CompareConfig:
    """Settings of `compare`: one evaluation config for both sides, and the certificate's."""

    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    delta: float = 0.05                              # the certificate may fail with probability <= delta
    targets: tuple[float, ...] = DEFAULT_TARGETS     # the automation table's target accuracies
    certify_share: float = 0.5                       # share of items that certifies; the rest fits the calibrator


@dataclass
class ScoredFile:
    """One side's input: the scored items and, where the file or a categories table gives them,
    each item's category and domain."""

    items: ScoredItems
    groups: dict[str, list[str]] = field(default_factory=dict)
    path: str = ""
    scoring: dict | None = None  # the run's meta file (model, dtype, task, ...) when `howsure score` wrote one
    adapter_overlap: dict | None = None  # `check_adapter_overlap`'s statement, scores from a LoRA adapter
    # An `Evaluation` of these very items that the caller already ran (the demo evaluates the
    # base model before it trains): reused when its settings equal the comparison's but for the
    # title, instead of cross-fitting the same calibrators again.
    evaluation: Any = None


def load_scored_file(path: str | Path, *, records_key: str | None = None, **columns: Any) -> ScoredFile:
    """Read a scored file as ``howsure evaluate`` does (same column options), keeping its
    ``category`` and ``domain`` columns when present."""
    frame = read_scores_table(path, records_key)
    items = scored_items_from_frame(frame, source=str(path), **columns)
    groups = {name: [str(v) for v in frame[name].tolist()] for name in GROUP_COLUMNS if name in frame.columns}
    return ScoredFile(items, groups, str(path), _scoring_meta(Path(path)))


def _scoring_meta(path: Path) -> dict | None:
    """What ``howsure score`` recorded about the run (model, dtype, task fingerprint, adapter...)
    beside its output, without the input path and columns; None when there is no meta file."""

    meta = meta_path(path)
    if not meta.is_file():
        return None
    try:
        data = json.loads(meta.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # the meta file only informs the report; the scores themselves were checked
    return {key: value for key, value in data.items() if key not in ("input", "columns")} if isinstance(data, dict) else None


def _scoring_notes(base: ScoredFile, tuned: ScoredFile) -> list[str]:
    """Sentences about how the two files were scored: same model, or another task prompt."""
    if base.scoring is None or tuned.scoring is None:
        return []
    notes = []
    if base.scoring == tuned.scoring:
        notes.append(f"Both files were scored by the same run settings (model {base.scoring.get('model')!r}): "
                     "this compares a model with itself.")
    if base.scoring.get("task_fingerprint") != tuned.scoring.get("task_fingerprint"):
        notes.append(f"The files were scored with different task prompts (fingerprints "
                     f"{base.scoring.get('task_fingerprint')} and {tuned.scoring.get('task_fingerprint')}): "
                     "the change measures the prompt as well as the model.")
    return notes


def groups_from_table(path: str | Path, texts: Sequence[str], *, text_column: str = "text") -> dict[str, list[str]]:
    """Each text's ``category`` (and ``domain`` when the table has one) from a labelled table,
    matched by text, e.g. the ``test.csv`` that ``howsure datasets seed-cwc`` wrote.

    Raises
    ------
    DataError
        No text or category column, a text given two different categories, or a scored text
        the table does not hold.
    """

    frame = read_table(path)
    for column in (text_column, "category"):
        if column not in frame.columns:
            raise DataError(f"categories file {str(path)!r} has no {column!r} column; columns are: "
                            + ", ".join(str(c) for c in frame.columns))
    present = [name for name in GROUP_COLUMNS if name in frame.columns]
    lookup: dict[str, tuple[str, ...]] = {}
    for record in frame.to_dict("records"):
        text, values = str(record[text_column]), tuple(str(record[name]) for name in present)
        if lookup.setdefault(text, values) != values:
            raise DataError(f"categories file {str(path)!r} gives the text {text[:60]!r} both "
                            f"{lookup[text]} and {values}")
    missing = [text for text in texts if text not in lookup]
    if missing:
        raise DataError(f"{len(missing)} of the {len(texts)} scored texts are not in the categories file "
                        f"{str(path)!r} (first: {missing[0][:60]!r})")
    return {name: [lookup[text][position] for text in texts] for position, name in enumerate(present)}


def check_same_items(base: ScoredFile, tuned: ScoredFile) -> None:
    """Refuse two files that do not score the same items (see the module docstring).

    Raises
    ------
    DataError
        A file without texts, different label sets, texts in one file only (counted both ways),
        or equal texts with different gold labels.
    """
    for side in (base, tuned):
        if side.items.texts is None:
            raise DataError(f"{side.path!r} has no text column; compare matches the two files' items by text "
                            "(pass --text-column)")
    if base.items.label_names != tuned.items.label_names:
        raise DataError(f"{base.path!r} scores labels {base.items.label_names} but {tuned.path!r} scores "
                        f"{tuned.items.label_names}; compare two runs of the same task")
    base_hashes = Counter(item_hashes(base.items.texts, "text"))
    tuned_hashes = Counter(item_hashes(tuned.items.texts, "text"))
    only_base = sum((base_hashes - tuned_hashes).values())
    only_tuned = sum((tuned_hashes - base_hashes).values())
    if only_base or only_tuned:
        raise DataError(
            f"{base.path!r} and {tuned.path!r} do not hold the same items: {only_base} of the "
            f"{base.items.n_items} items of the first are not in the second and {only_tuned} of the "
            f"{tuned.items.n_items} items of the second are not in the first (matched by text hash); "
            "score the same held-out items with both models"
        )
    if base.items.labels is not None and tuned.items.labels is not None:
        differ = sum((_gold_pairs(base) - _gold_pairs(tuned)).values())
        if differ:
            raise DataError(f"{differ} items have other gold labels in {tuned.path!r} than in {base.path!r}; "
                            "compare scores of the same labelled items")


def _gold_pairs(side: ScoredFile) -> Counter:
    names = side.items.label_names or []
    return Counter(zip(side.items.texts, (names[i] for i in side.items.labels)))


# --------------------------------------------------------------------------- one side


def _headline(columns: list[dict]) -> dict[str, dict]:
    """raw (all items) and calibrated (held-out) values of the headline metrics."""
    by_key = {column["key"]: column["values"] for column in columns}
    return {view: {name: by_key[view].get(name) for name in HEADLINE} for view in ("raw", "calibrated")}


def _confusion(gold: np.ndarray, predicted: np.ndarray, n_labels: int) -> list[list[int]]:
    matrix = np.zeros((n_labels, n_labels), dtype=np.int64)
    np.add.at(matrix, (gold, predicted), 1)
    return matrix.tolist()


def _certificates(items: ScoredItems, config: CompareConfig) -> tuple[dict | None, list[dict]]:
    """The certificate at the main target and the automation table over ``config.targets``."""

    evaluation = config.evaluation
    split = certify_with_split(
        items.labels, items.probabilities, calibrator=evaluation.calibrator, test_size=config.certify_share,
        seed=evaluation.seed, texts=items.texts, target_accuracy=evaluation.target, delta=config.delta,
        labels=items.label_names,
    )
    keys = ("certified", "threshold", "automation_rate", "n_calibration", "n_automated", "n_errors",
            "empirical_accuracy", "labels_needed", "target_accuracy", "delta", "method")
    guarantee = split.policy.guarantee
    main = {key: guarantee.get(key) for key in keys}
    main["calibrator_fit"] = guarantee.get("calibrator_fit")
    table = []
    for target in config.targets:
        if target == evaluation.target:
            found = guarantee
        else:  # the same fitted calibrator and certification items, another target
            found = certify_policy(items.labels[split.certify_idx], items.probabilities[split.certify_idx],
                                   calibrator=split.calibrator, target_accuracy=target, delta=config.delta,
                                   labels=items.label_names).guarantee
        table.append({"target_accuracy": target, "certified": found.get("certified"),
                      "threshold": found.get("threshold"), "automation_rate": found.get("automation_rate")})
    return main, table


def _group_rows(side: ScoredFile, result, names: list[str] | None) -> dict[str, dict[str, dict]]:
    """Per category (and category x domain) figures of one side: n, accuracy and mean confidence,
    raw and calibrated (held-out), and the mean probability of each label."""
    items = side.items
    evaluated = result.evaluated
    keys = _group_keys(side.groups)
    out: dict[str, dict[str, dict]] = {}
    for by, per_item in keys.items():
        table: dict[str, dict] = {}
        for group in sorted(set(per_item)):
            members = np.array([per_item[i] == group for i in range(items.n_items)])
            held = members[evaluated]
            row = {"n": int(members.sum()),
                   "raw_accuracy": float(items.correct[members].mean()),
                   "raw_confidence": float(items.confidence[members].mean()),
                   "calibrated_accuracy": float(result.calibrated_correct[held].mean()) if held.any() else None,
                   "calibrated_confidence": float(result.calibrated_confidence[held].mean()) if held.any() else None}
            if items.probabilities is not None and names:
                row["raw_mean_probability"] = dict(zip(names, items.probabilities[members].mean(axis=0).tolist()))
            if result.calibrated_probabilities is not None and names and held.any():
                row["calibrated_mean_probability"] = dict(
                    zip(names, result.calibrated_probabilities[held].mean(axis=0).tolist()))
            table[group] = row
        out[by] = table
    return out


def _group_keys(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    keys = dict(groups)
    if "category" in groups and "domain" in groups:
        keys["category / domain"] = [f"{c} / {d}" for c, d in zip(groups["category"], groups["domain"])]
    return keys


def _evaluate_side(key: str, side: ScoredFile, config: CompareConfig, command: str | None) -> tuple[dict, Any]:
    items = side.items
    result = side.evaluation
    if not _reusable(result, side, config.evaluation):
        result = evaluate(items, config.evaluation, command=command, adapter_overlap=side.adapter_overlap)
    summary = result.summary
    names = items.label_names
    entry = {
        "name": SIDE_NAMES[key], "path": side.path, "scoring": side.scoring, "adapter": side.adapter_overlap,
        "calibration": summary["calibration"], "input": summary["input"],
        "metrics": summary["metrics"], "headline": _headline(summary["metrics"]),
        "certificate": None, "targets": [], "confusion": None, "notes": summary["notes"],
    }
    if items.has_distribution:
        entry["certificate"], entry["targets"] = _certificates(items, config)
        calibrated_predicted = (result.calibrated_probabilities.argmax(axis=1)
                                if result.calibrated_probabilities is not None
                                else items.probabilities[result.evaluated].argmax(axis=1))
        entry["confusion"] = {
            "labels": names,
            "raw": _confusion(items.labels, items.probabilities.argmax(axis=1), len(names)),
            "calibrated": _confusion(items.labels[result.evaluated], calibrated_predicted, len(names)),
        }
    return entry, result


def _reusable(result: Any, side: ScoredFile, evaluation: EvaluationConfig) -> bool:
    """Whether ``result`` is what `evaluate` would return for ``side`` under ``evaluation``: the
    same items object, the same settings but for the title, no adapter statement to add."""
    return (result is not None and result.items is side.items and side.adapter_overlap is None
            and result.config is not None and replace(result.config, title=None) == replace(evaluation, title=None))


# --------------------------------------------------------------------------- both


def _changes(sides: dict[str, dict]) -> dict[str, dict[str, float | None]]:
    changes = {}
    for view in ("raw", "calibrated"):
        changes[view] = {}
        for name in HEADLINE:
            before, after = sides["base"]["headline"][view].get(name), sides["tuned"]["headline"][view].get(name)
            ok = before and after and before.get("value") is not None and after.get("value") is not None
            changes[view][name] = after["value"] - before["value"] if ok else None
    return changes


def _plots(results: dict[str, Any], config: EvaluationConfig) -> list[dict]:

    def pair(kind: str, calibrated: bool):
        panels = []
        for key in SIDES:
            result = results[key]
            if calibrated:
                correct, confidence = result.calibrated_correct, result.calibrated_confidence
            else:
                correct = result.items.correct[result.evaluated]
                confidence = result.items.confidence[result.evaluated]
            title = f"{SIDE_NAMES[key].capitalize()}: {'calibrated (held-out)' if calibrated else 'raw'}"
            panels.append(plots.reliability_diagram(correct, confidence, config.n_bins, title=title)
                          if kind == "reliability" else plots.outcome_histogram(correct, confidence, title=title))
        return plots.side_by_side(*panels).to_dict()

    reliability = ("Each dot is a bin of items with similar confidence: how often they were right (up) against "
                   "how confident the model was (across); on the dashed line confidence means what it says.")
    histogram = ("How confident each model was when it was right (green) and when it was wrong (orange); "
                 "fine-tuning should move right answers to high confidence and keep wrong ones low.")
    return [
        {"key": "reliability_raw", "title": "Reliability, raw: base vs fine-tuned", "caption": reliability,
         "display": pair("reliability", False)},
        {"key": "reliability_calibrated", "title": "Reliability, calibrated (held-out): base vs fine-tuned",
         "caption": reliability, "display": pair("reliability", True)},
        {"key": "histogram_raw", "title": "Confidence histograms, raw: base vs fine-tuned", "caption": histogram,
         "display": pair("histogram", False)},
        {"key": "histogram_calibrated", "title": "Confidence histograms, calibrated (held-out): base vs fine-tuned",
         "caption": histogram, "display": pair("histogram", True)},
    ]


def compare(base: ScoredFile, tuned: ScoredFile, config: CompareConfig | None = None, *,
            command: str | None = None, title: str | None = None) -> dict:
    """Evaluate both sides with the same settings and put them side by side.

    Returns
    -------
    dict
        The comparison summary (see the module docstring); `write_comparison` writes it.

    Raises
    ------
    DataError
        The files do not hold the same items (`check_same_items`).
    """

    config = config or CompareConfig()
    check_delta(config.delta)
    for target in (config.evaluation.target, *config.targets):
        check_target(target)
    check_same_items(base, tuned)
    evaluation = replace(config.evaluation, title=None)
    config = replace(config, evaluation=evaluation)
    sides, results = {}, {}
    for key, side in (("base", base), ("tuned", tuned)):
        sides[key], results[key] = _evaluate_side(key, side, config, command)
    notes = _scoring_notes(base, tuned)
    group_rows = {key: _group_rows(side, results[key], side.items.label_names) for key, side in
                  (("base", base), ("tuned", tuned)) if side.groups}
    groups = []
    if group_rows:
        known = next(iter(group_rows.values()))
        for by in known:
            rows = []
            for group in known[by]:
                rows.append({"group": group, "n": known[by][group]["n"],
                             **{key: group_rows[key][by][group] for key in group_rows}})
            groups.append({"by": by, "rows": rows})
        if len(group_rows) == 1:
            notes.append(f"Categories were known for the {SIDE_NAMES[next(iter(group_rows))]} file only.")
    else:
        notes.append("No category column: the per-category view is left out (pass --categories FILE).")
    if not base.items.has_distribution:
        notes.append("The inputs give the predicted label's confidence only: no certificate or confusion matrix.")
    items = base.items
    return {
        "format": SUMMARY_FORMAT, "version": SUMMARY_VERSION,
        "title": title or f"Before / after: {Path(base.path).name} vs {Path(tuned.path).name}",
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "howsure_version": __version__, "command": command,
        "settings": {**{k: v for k, v in vars(evaluation).items() if k != "title"},
                     "delta": config.delta, "targets": list(config.targets), "certify_share": config.certify_share},
        "items": {"n_items": items.n_items, "n_unique_texts": len(set(items.texts)), "labels": items.label_names,
                  "matched_by": "sha256 of each text (as calibrator fingerprints hash them)"},
        "sides": sides,
        "changes": _changes(sides),
        "groups": groups,
        "plots": _plots(results, evaluation),
        "notes": notes,
    }


def write_comparison(summary: dict, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``comparison.json`` and the self-contained ``comparison.html`` into ``out_dir``."""

    out_dir = Path(out_dir)
    summary = json_ready(summary)
    json_path = write_summary(summary, out_dir / "comparison.json")
    html_path = out_dir / "comparison.html"
    html_path.write_text(render_comparison_html(summary), "utf-8")
    return html_path, json_path
