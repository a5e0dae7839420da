"""Commands that need no model: thresholds, route, plan.

They read scored items (``howsure score`` JSONL, or any JSON/JSONL/CSV/TSV/Parquet table with
a probability column and a gold-label or correctness column) and start in about a second:
nothing on their import path loads torch, transformers, scikit-learn or pandas.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import command, console, err_console
from howsure.errors import DataError, PolicyError
from howsure.spreadsheet import formula_safe

TABLE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
LIST_KEYS = ("results", "records", "items")  # where a JSON object keeps its list of records
DEFAULT_VOLUME = 1000  # per-day figures are "per 1,000 items" when no volume is given


# ---------------------------------------------------------------------------------- reading
def read_records(path: Path) -> list[dict[str, Any]]:
    """Records of a JSONL, JSON (a list, or an object with a ``results`` list), CSV, TSV or
    Parquet file, as dicts."""
    if not path.exists():
        raise DataError(f"input file {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(f"cannot read {str(path)!r}: expected one of {', '.join(TABLE_SUFFIXES)}")
    if suffix == ".parquet":
        import pandas as pd  # only Parquet needs it; keeps the other formats quick to start

        return pd.read_parquet(path).to_dict(orient="records")
    text = path.read_text(encoding="utf-8")
    if suffix == ".jsonl":
        records = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number} is not valid JSON: {exc}") from None
    elif suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path} is not valid JSON: {exc}") from None
        if isinstance(data, dict):
            key = next((k for k in LIST_KEYS if isinstance(data.get(k), list)), None)
            if key is None:
                raise DataError(f"{path} is a JSON object without a list under {' / '.join(LIST_KEYS)}")
            data = data[key]
        if not isinstance(data, list):
            raise DataError(f"{path} must hold a list of records, got {type(data).__name__}")
        records = data
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            records = list(csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ","))
    if not records:
        raise DataError(f"{path} holds no records")
    bad = next((i for i, r in enumerate(records) if not isinstance(r, dict)), None)
    if bad is not None:
        raise DataError(f"record {bad} of {path} is not an object: {records[bad]!r}")
    return records


@dataclass
class Scored:
    """Scored items read from a table, in the shapes the library wants."""

    records: list[dict[str, Any]]
    labels: list[str]
    probabilities: np.ndarray | None  # (n, K) raw label probabilities, when known
    confidence: np.ndarray  # (n,) raw confidence of the predicted label
    predicted: list[str]
    gold: list[str] | None  # true labels, when the table has them
    correct: np.ndarray | None  # (n,) bool, from gold or a correctness column


def _parse_value(value: Any) -> Any:
    """Cells of CSV files are strings: turn JSON objects and numbers back into values."""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped.startswith("{"):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError:
                return value
        try:
            return float(stripped)
        except ValueError:
            return value
    return value


def _as_bool(value: Any, row: int, column: str) -> bool:
    value = _parse_value(value)
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no"):
        return value.strip().lower() in ("true", "yes")
    raise DataError(f"column {column!r} of record {row} must be true/false or 0/1, got {value!r}")


def read_scored(
    path: Path,
    *,
    prob_column: str | None = None,
    label_column: str | None = None,
    correct_column: str | None = None,
    prediction_column: str = "prediction",
    labels: list[str] | None = None,
    read_truth: bool = True,
) -> Scored:
    """Read scored items.

    ``prob_column`` holds either an object ``{label: probability}`` per record (``howsure
    score`` output: column ``probabilities``) or one number, the predicted label's confidence
    (column ``confidence``; the prediction then comes from ``prediction_column``). The truth
    comes from ``label_column`` (default ``label``, else ``expected``) or ``correct_column``
    (default ``correct``). ``labels`` fixes the label names and their order (from the task or
    the policy); otherwise they are read from the data. ``read_truth=False`` ignores gold labels
    and correctness (routing does not need them).
    """
    records = read_records(path)
    first = records[0]
    if prob_column is None:
        prob_column = next((c for c in ("probabilities", "confidence") if c in first), None)
        if prob_column is None:
            raise DataError(
                f"{path} has no 'probabilities' or 'confidence' column (columns: {sorted(first)}); "
                "name yours with --prob-column"
            )
    if read_truth and label_column is None:
        label_column = next((c for c in ("label", "expected") if c in first), None)
    if read_truth and correct_column is None and "correct" in first:
        correct_column = "correct"
    for column in (prob_column, label_column, correct_column):
        if column is not None and column not in first:
            raise DataError(f"{path} has no column {column!r}; its columns are {sorted(first)}")

    values = [_parse_value(r.get(prob_column)) for r in records]
    gold = None
    if label_column is not None:
        gold = [None if r.get(label_column) in (None, "") else str(r[label_column]) for r in records]
        if any(g is None for g in gold):
            gold = None if all(g is None for g in gold) else gold
            if gold is not None:
                missing = gold.index(None)
                raise DataError(f"record {missing} of {path} has no gold label in column {label_column!r}")

    if isinstance(values[0], dict):
        names = labels if labels is not None else [str(k) for k in values[0]]
        probabilities = np.empty((len(records), len(names)))
        for i, value in enumerate(values):
            if not isinstance(value, dict):
                raise DataError(f"record {i}: column {prob_column!r} must be an object of label probabilities, got {value!r}")
            keys = [str(k) for k in value]
            unknown = sorted(set(keys) - set(names))
            if unknown:
                raise PolicyError(f"record {i} has a probability for label {unknown[0]!r}, which is not one of the labels {names}")
            if set(keys) != set(names):
                missing = sorted(set(names) - set(keys))
                raise DataError(f"record {i} has no probability for label {missing[0]!r}")
            try:
                probabilities[i] = [float(value[name]) for name in names]
            except (TypeError, ValueError):
                raise DataError(f"record {i}: probabilities must be numbers, got {value!r}") from None
        predicted_index = probabilities.argmax(axis=1)
        confidence = probabilities[np.arange(len(records)), predicted_index]
        predicted = [names[i] for i in predicted_index]
    else:
        try:
            confidence = np.array([float(v) for v in values])
        except (TypeError, ValueError):
            bad = next(i for i, v in enumerate(values) if not isinstance(v, (int, float)))
            raise DataError(f"record {bad}: column {prob_column!r} must be a number or an object of label probabilities, got {values[bad]!r}") from None
        if prediction_column not in first:
            raise DataError(
                f"column {prob_column!r} holds one confidence per item, so the predicted label must "
                f"come from a column; {path} has no {prediction_column!r} (use --prediction-column)"
            )
        predicted = [str(r[prediction_column]) for r in records]
        names = labels if labels is not None else sorted(set(predicted) | set(gold or []))
        probabilities = None
        if len(names) == 2:
            # Two labels: the predicted label's confidence determines the whole distribution.
            low = np.flatnonzero(confidence < 0.5)
            if low.size:
                raise DataError(
                    f"record {int(low[0])} has confidence {confidence[low[0]].item()!r} < 0.5 for its predicted "
                    "label, which with two labels cannot be the most probable one"
                )
            index = {name: k for k, name in enumerate(names)}
            probabilities = np.empty((len(records), 2))
            for i, label in enumerate(predicted):
                if label not in index:
                    raise PolicyError(f"predicted label {label!r} of record {i} is not one of the labels {names}")
                probabilities[i, index[label]] = confidence[i]
                probabilities[i, 1 - index[label]] = 1 - confidence[i]
    if len(names) < 2:
        raise DataError(f"found only the label(s) {names} in {path}; pass --task to name all labels")
    if gold is not None:
        unknown = next((g for g in gold if g not in names), None)
        if unknown is not None:
            raise PolicyError(f"gold label {unknown!r} is not one of the labels {names}")
        correct = np.array([p == g for p, g in zip(predicted, gold)])
    elif correct_column is not None:
        correct = np.array([_as_bool(r.get(correct_column), i, correct_column) for i, r in enumerate(records)])
    else:
        correct = None
    return Scored(records, list(names), probabilities, confidence, predicted, gold, correct)


# ---------------------------------------------------------------------------------- printing
def _money(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:,.0f}"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _pct(value: float) -> str:
    """97.5 for 0.975; 100 rather than 100.0, to keep the interval column narrow."""
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}".replace("100.0", "100")


def _short(value: float) -> str:
    """Compact number for interval ends: 950, 2.5k, 126k."""
    if value is None or math.isnan(value):
        return "-"
    if abs(value) < 1000:
        return f"{value:.0f}"
    if abs(value) < 10_000:
        return f"{value / 1000:.1f}k"
    if abs(value) < 1_000_000:
        return f"{value / 1000:.0f}k"
    return f"{value / 1e6:.1f}M"


def print_manager_table(rows: list, *, with_cost: bool, volume_label: str) -> None:
    """The table a manager reads: one row per candidate threshold, strict to loose."""
    table = Table(
        title=f"Thresholds, {volume_label}",
        caption="auto: items automated, review: items sent to people; second lines: share "
                "automated and 95 % bootstrap intervals of the expected "
                "values; * inside the certified range",
        title_justify="left", caption_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
        collapse_padding=True, padding=(0, 1),
    )
    table.add_column("", no_wrap=True, min_width=10)
    for name in ("threshold", "auto", "review", "accuracy %", "errors"):
        table.add_column(name, justify="right", no_wrap=True)
    if with_cost:
        table.add_column("cost", justify="right", no_wrap=True)
    for row in rows:
        # Intervals go on a second line so the table fits an 80-column terminal.
        acc = row.accuracy_interval
        cells = [
            row.note,
            ("none" if row.threshold is None else f"{row.threshold:.6g}") + ("*" if row.certified else " "),
            f"{_count(row.automated_per_day)}\n{row.automation_rate:.0%}",
            _count(row.reviewed_per_day),
            "-" if row.accuracy is None else f"{_pct(row.accuracy)}\n{_pct(acc[0])}-{_pct(acc[1])}",
            f"{_count(row.errors_per_day)}\n{_short(row.errors_interval[0])}-{_short(row.errors_interval[1])}",
        ]
        if with_cost:
            cells.append(f"{_money(row.cost_per_day)}\n{_short(row.cost_interval[0])}-{_short(row.cost_interval[1])}")
        table.add_row(*cells, style="bold" if row.note.startswith(("certified", "cheapest certified")) else None)
    console.print(table)


# ---------------------------------------------------------------------------------- commands
def _parse_label_costs(items: list[str]) -> dict[str, float]:
    costs: dict[str, float] = {}
    for item in items:
        label, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError
            costs[label.strip()] = float(value)
        except ValueError:
            raise PolicyError(f"--cost-error-label expects LABEL=COST, got {item!r}") from None
    return costs


@command("thresholds")
def thresholds(
    input: Path = typer.Argument(..., help="Scored items: howsure score JSONL or a table."),
    target: float = typer.Option(0.95, help="Accuracy the automated items must reach."),
    delta: float = typer.Option(0.05, help="Chance the guarantee may fail (0.05: holds with 95 %)."),
    out: Path = typer.Option(Path("policy.json"), "--out", help="Where to write the policy JSON."),
    method: str = typer.Option("fallback", help="fallback (default; needs iid only), multistart, or fixed_sequence (also assumes no small top slice misses the target)."),
    p_value: str = typer.Option("binomial", "--p-value", help="binomial or hoeffding_bentkus."),
    per_class: bool = typer.Option(
        False, "--per-class",
        help="One threshold per predicted label, certified jointly. On two labels this IS the "
             "two-sided policy: auto-positive above one threshold, auto-negative below another, "
             "review the middle.",
    ),
    calibrator: Optional[Path] = typer.Option(None, help="Fitted calibrator JSON (fitted on OTHER items; checked against its recorded fitting items)."),
    fit_calibrator: Optional[str] = typer.Option(
        None, "--fit-calibrator",
        help="Fit this calibrator (auto, temperature, platt, isotonic, beta, histogram, venn_abers) on "
             "part of the items and certify on the rest (needs per-label probabilities and gold labels).",
    ),
    certify_share: float = typer.Option(0.5, "--certify-share", help="With --fit-calibrator: share of the items that certifies."),
    seed: int = typer.Option(0, help="With --fit-calibrator: seed of the split and of auto's folds."),
    allow_overlap: bool = typer.Option(
        False, "--allow-overlap",
        help="Certify even on items the --calibrator was fitted on (the guarantee then does not hold; the policy file says so).",
    ),
    task: Optional[str] = typer.Option(None, help="Task TOML or bundled task name; fixes the labels."),
    model_id: Optional[str] = typer.Option(None, "--model-id", help="Model the scores came from."),
    cost_review: Optional[float] = typer.Option(None, "--cost-review", help="Cost of one human review."),
    cost_error: Optional[float] = typer.Option(None, "--cost-error", help="Cost of one wrong automated decision."),
    cost_error_label: list[str] = typer.Option([], "--cost-error-label", help="LABEL=COST: error cost per predicted label (repeatable)."),
    volume: Optional[float] = typer.Option(None, help="Items per day."),
    policy_version: int = typer.Option(1, "--policy-version", help="Your version number of this policy."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column", help="Column of label probabilities (object) or the predicted label's confidence (number)."),
    label_column: Optional[str] = typer.Option(None, "--label-column", help="Column of gold labels (default: label or expected)."),
    correct_column: Optional[str] = typer.Option(None, "--correct-column", help="Column of 0/1 correctness (when no gold labels)."),
    prediction_column: str = typer.Option("prediction", "--prediction-column", help="Predicted label, when --prob-column is a number."),
) -> None:
    """Certify a confidence threshold and write the policy file."""
    from howsure.decisions import DEFAULT_STARTS, CostModel, certify_threshold, check_delta, check_target, manager_table
    from howsure.policy import certify_policy

    check_target(target)
    check_delta(delta)
    task_obj = None
    task_labels = None
    if task is not None:
        from howsure.task import load_task

        task_obj = load_task(task)
        task_labels = task_obj.label_names
    scored = read_scored(input, prob_column=prob_column, label_column=label_column,
                         correct_column=correct_column, prediction_column=prediction_column,
                         labels=task_labels)
    if scored.correct is None:
        raise DataError(f"{input} has neither gold labels nor correctness; give --label-column or --correct-column")
    texts = _column_or_none(scored.records, "text")
    ids = _column_or_none(scored.records, "id")
    from_distribution = scored.probabilities is not None and scored.gold is not None
    if fit_calibrator is not None:
        if calibrator is not None:
            raise PolicyError(f"--calibrator {calibrator} and --fit-calibrator {fit_calibrator} exclude each other; "
                              "bring a fitted calibrator or fit one here")
        if not from_distribution:
            raise DataError(
                f"--fit-calibrator needs every label's probability and the gold labels; {input} gives "
                "only the predicted label's confidence and correctness"
            )
    calibrator_obj = None
    overlap = None
    if calibrator is not None:
        from howsure.calibration import load_calibrator
        from howsure.fit_certify import check_calibrator_overlap

        calibrator_obj = load_calibrator(calibrator)
        overlap = check_calibrator_overlap(calibrator_obj, texts=texts, ids=ids, allow_overlap=allow_overlap,
                                           source=str(input))

    cost = None
    has_cost = cost_review is not None or cost_error is not None or bool(cost_error_label)
    if has_cost:
        if cost_review is None or (cost_error is None and not cost_error_label):
            raise PolicyError("cost optimisation needs --cost-review and --cost-error (or --cost-error-label)")
        per_label = _parse_label_costs(cost_error_label)
        if per_label and cost_error is not None:
            per_label = {label: per_label.get(label, cost_error) for label in scored.labels}
        cost = CostModel(cost_review, per_label or cost_error, volume if volume is not None else DEFAULT_VOLUME)

    split = None
    if fit_calibrator is not None:
        from howsure.fit_certify import certify_with_split

        gold_index = np.array([scored.labels.index(g) for g in scored.gold])
        split = certify_with_split(
            scored.probabilities, gold_index, calibrator=fit_calibrator, test_size=certify_share, seed=seed,
            texts=texts, ids=ids, target_accuracy=target, delta=delta, labels=scored.labels, task=task_obj,
            model_id=model_id, method=method, p_value=p_value, per_class=per_class, cost=cost,
            version=policy_version,
        )
        policy = split.policy
    elif from_distribution:
        policy = certify_policy(scored.probabilities, scored.gold, target_accuracy=target, delta=delta,
                                labels=scored.labels, task=task_obj, calibrator=calibrator_obj,
                                model_id=model_id, method=method, p_value=p_value, per_class=per_class,
                                cost=cost, version=policy_version)
    else:
        policy = certify_policy(scored.confidence, scored.correct, target_accuracy=target, delta=delta,
                                labels=scored.labels, task=task_obj, calibrator=calibrator_obj,
                                model_id=model_id, method=method, p_value=p_value, per_class=per_class,
                                cost=cost, version=policy_version)
    if overlap is not None:
        policy.guarantee["calibrator_overlap"] = overlap
    policy.save(out)

    n = len(scored.records)
    console.print(f"[bold]{n}[/] labelled items from {escape(str(input))}; labels {escape(', '.join(scored.labels))}")
    # The items the certificate (and the table) stand on: all, or the certifying part.
    used = np.arange(n) if split is None else split.certify_idx
    if split is not None:
        fit = policy.guarantee["calibrator_fit"]
        chosen = f" -> {fit['chosen']}" if fit.get("chosen") else ""
        console.print(f"calibrator {escape(fit_calibrator)}{escape(chosen)} fitted on {fit['n_fit']} items, "
                      f"threshold certified on the other {fit['n_certify']}", highlight=False)
    elif calibrator_obj is None:
        from howsure.fit_certify import raw_calibration_note

        note = raw_calibration_note(scored.confidence, scored.correct)
        if note is not None:
            err_console.print(f"[yellow]warning:[/] {note}", highlight=False, soft_wrap=True)
    elif overlap is not None and not overlap["checked"]:
        err_console.print(
            f"[yellow]warning:[/] {calibrator} records no fitting items matching this input's "
            "text or id column, so howsure cannot check that it was fitted on other items", highlight=False,
            soft_wrap=True,
        )
    elif overlap is not None and overlap["n_overlap"]:
        err_console.print(
            f"[yellow]warning:[/] {overlap['n_overlap']} items were among the calibrator's fitting items "
            "(--allow-overlap): the certificate does not hold", highlight=False, soft_wrap=True,
        )
    if policy.rule == "top_label":
        certificate_text = certificate_line(policy.guarantee)
        console.print(certificate_text, highlight=False)
        # The table uses the same confidences as the certificate: the policy's calibrated ones.
        if from_distribution:
            predicted, confidence, _ = policy.calibrate(scored.probabilities[used])
            predicted_names = [policy.labels[i] for i in predicted]
            correct = np.array(predicted_names) == np.array(scored.gold)[used]
        else:
            confidence = scored.confidence
            calib = policy.loaded_calibrator()
            if calib is not None:
                confidence = np.asarray(calib.predict_proba(confidence), dtype=np.float64)
            correct, predicted_names = scored.correct, scored.predicted
        certificate = certify_threshold(confidence, correct, target, delta, method=method, p_value=p_value,
                                        starts=policy.guarantee["starts"] or DEFAULT_STARTS,
                                        plan_if_uncertified=False)
        if method == "fixed_sequence":
            _warn_if_top_slice_misses(confidence, correct, target, delta, p_value)
        table_cost = cost or CostModel(0.0, 0.0, volume if volume is not None else DEFAULT_VOLUME)
        rows = manager_table(confidence, correct, table_cost, certificate=certificate,
                             predicted_labels=predicted_names if isinstance(table_cost.cost_error, dict) else None)
        if cost is None:
            rows = [r for r in rows if "cheapest" not in r.note]
        per = f"per day at {volume:,.0f} items/day" if volume is not None else f"per {DEFAULT_VOLUME:,} items"
        print_manager_table(rows, with_cost=cost is not None, volume_label=per)
        if cost is not None:
            chosen = policy.cost["chosen"]
            console.print(
                f"cost-optimal certified threshold: {_fmt_threshold(chosen['threshold'])}, expected cost "
                f"{_money(chosen['cost_per_day'])} per day (review everything: "
                f"{_money(policy.cost['review_everything']['cost_per_day'])})", highlight=False,
            )
    else:
        for label, cert in policy.guarantee["classes"].items():
            console.print(f"[bold]{escape(label)}[/]: " + (certificate_line(cert) if cert else "never predicted"),
                          highlight=False)
        two_sided = policy.two_sided()
        if two_sided is not None:
            console.print(f"two-sided: {two_sided.text(calibrated=policy.calibrator is not None)}", highlight=False)
    console.print(f"policy {policy.policy_id} written to {escape(str(out))}")


def _warn_if_top_slice_misses(confidence: np.ndarray, correct: np.ndarray, target: float, delta: float,
                              p_value: str) -> None:
    """fixed_sequence assumes no top slice too small to test misses the target; say so when the
    calibration items themselves show one that does."""
    from howsure.decisions import min_items_to_certify, selective_counts
    from howsure.walks import top_slice_below_target

    m0 = min_items_to_certify(target, delta, p_value)
    _, n_auto, n_err = selective_counts(confidence, correct)
    found = top_slice_below_target(n_auto, n_err, 1 - target, m0)
    if found is not None:
        items, accuracy = found
        err_console.print(
            f"[yellow]warning:[/] the {items} most confident items are only {accuracy:.1%} right: fixed_sequence "
            f"assumes no top slice of fewer than {m0} items misses the target {target:.1%}, and these items "
            "suggest one does; --method fallback needs no such condition", highlight=False, soft_wrap=True,
        )


def _column_or_none(records: list[dict[str, Any]], column: str) -> list[str] | None:
    """Every record's value in ``column`` as text, or None unless all records have one."""
    values = [record.get(column) for record in records]
    return None if any(v is None or v == "" for v in values) else [str(v) for v in values]


def _percent(share: float) -> str:
    """95% for 0.95, 97.5% for 0.975 (a per-label share of delta must not round to 98%)."""
    return f"{100 * share:.4g}%"


def _fmt_threshold(value: float | None) -> str:
    return "none (review everything)" if value is None else f"{value:.6g}"


def certificate_line(cert: dict[str, Any]) -> str:
    if cert.get("certified"):
        return (
            f"[green]certified[/]: confidence >= {cert['threshold']:.6g} automates {cert['n_automated']} of "
            f"{cert['n_calibration']} ({cert['automation_rate']:.1%}); accuracy >= "
            f"{cert['target_accuracy']:.1%} with probability >= {_percent(1 - cert['delta'])} "
            f"({cert['n_errors']} errors seen; {cert['method']}, {cert['p_value']} p-values)"
        )
    needed = cert.get("labels_needed")
    more = (
        f"about {needed - cert['n_calibration']:,} more labelled items ({needed:,} in all) would "
        "certify one if the observed accuracy profile holds"
        if needed is not None
        else "the observed accuracy never reaches the target, so more labels alone will not help"
    )
    return (
        f"[yellow]nothing certified[/] at accuracy >= {cert['target_accuracy']:.1%} with probability >= "
        f"{_percent(1 - cert['delta'])} from {cert['n_calibration']} items: every item goes to review; {more}"
    )


def _write_records(records: list[dict[str, Any]], path: Path) -> None:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        columns: list[str] = []
        for record in records:
            columns.extend(k for k in record if k not in columns)
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, columns, delimiter="\t" if suffix == ".tsv" else ",")
            writer.writeheader()
            for record in records:
                # Texts come from users: a cell a spreadsheet would run as a formula is quoted.
                writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else formula_safe(v)
                                 for k, v in record.items()})
    elif suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for record in records:
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    else:
        raise DataError(f"cannot write {str(path)!r}: expected .jsonl, .csv or .tsv")


@command("route")
def route(
    input: Path = typer.Argument(..., help="Scored items: howsure score JSONL or a table."),
    policy: Path = typer.Option(..., "--policy", help="Policy JSON written by howsure thresholds."),
    output: Path = typer.Option(..., "--output", help="Where to write the routed items (.jsonl, .csv, .tsv)."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column", help="Column of label probabilities (object) or the predicted label's confidence (number)."),
    prediction_column: str = typer.Option("prediction", "--prediction-column", help="Predicted label, when --prob-column is a number."),
) -> None:
    """Add a decision column (auto or review) to scored items, following a policy."""
    from howsure.policy import Policy

    loaded = Policy.load(policy)
    scored = read_scored(input, prob_column=prob_column, prediction_column=prediction_column,
                         labels=loaded.labels, read_truth=False)
    if scored.probabilities is None:
        raise DataError(
            f"{input} gives only the predicted label's confidence for {len(loaded.labels)} labels; "
            "routing needs every label's probability (the 'probabilities' column of howsure score)"
        )
    predicted, confidence, _ = loaded.calibrate(scored.probabilities)
    auto = loaded.automate(predicted, confidence)
    routed = []
    for record, p, c, a in zip(scored.records, predicted, confidence, auto):
        routed.append({
            **record,
            "decision": "auto" if a else "review",
            "decision_label": loaded.labels[p],
            "decision_confidence": round(float(c), 8),
            "policy_id": loaded.policy_id,
        })
    _write_records(routed, output)
    n = len(routed)
    console.print(
        f"{int(auto.sum()):,} of {n:,} items automated ({auto.mean():.1%}), "
        f"{n - int(auto.sum()):,} to review; policy {escape(loaded.policy_id)}: {escape(loaded.summary())}",
        highlight=False,
    )
    console.print(f"written to {escape(str(output))}")


@command("plan")
def plan(
    input: Path = typer.Argument(..., help="A pilot set of scored, labelled items."),
    target: float = typer.Option(0.95, help="Accuracy the automated items must reach."),
    delta: float = typer.Option(0.05, help="Chance the guarantee may fail."),
    rates: str = typer.Option("0.1,0.2,0.3,0.5", help="Automation rates to plan for, comma-separated."),
    draws: int = typer.Option(100, help="Bootstrap draws per calibration-set size for the curve."),
    chart: Optional[Path] = typer.Option(None, help="Also draw automation share vs labelled items to this PNG."),
    seed: int = typer.Option(0, help="Seed of the bootstrap."),
    prob_column: Optional[str] = typer.Option(None, "--prob-column"),
    label_column: Optional[str] = typer.Option(None, "--label-column"),
    correct_column: Optional[str] = typer.Option(None, "--correct-column"),
    prediction_column: str = typer.Option("prediction", "--prediction-column"),
) -> None:
    """How many labelled items a certified threshold needs, at each automation rate."""
    from howsure.decisions import check_delta, check_target, labels_needed, sample_size_curve

    check_target(target)
    check_delta(delta)
    scored = read_scored(input, prob_column=prob_column, label_column=label_column,
                         correct_column=correct_column, prediction_column=prediction_column)
    if scored.correct is None:
        raise DataError(f"{input} has neither gold labels nor correctness; give --label-column or --correct-column")
    try:
        wanted = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise PolicyError(f"--rates expects numbers like 0.1,0.3, got {rates!r}") from None
    table = Table(title=f"Labelled items needed for accuracy >= {target:.0%} with probability >= {1 - delta:.0%}")
    table.add_column("automation rate", justify="right")
    table.add_column("labelled items needed", justify="right")
    for rate in wanted:
        needed = labels_needed(scored.confidence, scored.correct, target, delta, automation_rate=rate)
        table.add_row(f"{rate:.0%}", "not reachable" if needed is None else f"{needed:,}")
    console.print(table)
    curve = sample_size_curve(scored.confidence, scored.correct, target, delta, n_draws=draws, seed=seed)
    table = Table(title=f"Certified automation share by calibration-set size (pilot of {len(scored.records)} items)")
    for name in ("labelled items", "plug-in", "bootstrap median", "10-90 %", "certified in"):
        table.add_column(name, justify="right")
    for i, size in enumerate(curve["n_labels"]):
        table.add_row(
            f"{size:,}", f"{curve['planned_share'][i]:.1%}", f"{curve['median_share'][i]:.1%}",
            f"{curve['low_share'][i]:.1%} - {curve['high_share'][i]:.1%}",
            f"{curve['certified_fraction'][i]:.0%} of draws",
        )
    console.print(table)
    if chart is not None:
        draw_sample_size_chart(curve, chart, target=target, delta=delta)
        console.print(f"chart written to {escape(str(chart))}")


def draw_sample_size_chart(curve: dict[str, np.ndarray], path: Path, *, target: float, delta: float) -> None:
    """Automation share against labelled-set size, with the bootstrap band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    ax.fill_between(curve["n_labels"], curve["low_share"], curve["high_share"], alpha=0.25,
                    label="bootstrap 10-90 %")
    ax.plot(curve["n_labels"], curve["median_share"], marker="o", label="bootstrap median")
    ax.plot(curve["n_labels"], curve["planned_share"], linestyle="--", label="plug-in forecast")
    ax.set_xscale("log")
    ax.set_xlabel("labelled calibration items")
    ax.set_ylabel("certified automation share")
    ax.set_title(f"accuracy >= {target:.0%} with probability >= {1 - delta:.0%}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
