"""Commands that measure scores: evaluate (honest calibration + report) and report (redraw)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.markup import escape

from howsure.cli.app import command, console, err_console
from howsure.errors import DataError


def _command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["howsure", *sys.argv[1:]])


@command("evaluate")
def evaluate(
    input: Path = typer.Argument(..., help="`howsure score` output, or any CSV/TSV/JSONL/JSON/Parquet table of scores."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for report.html, summary.json, calibrator.json, predictions.jsonl."),
    calibrator: str = typer.Option("auto", help="temperature, platt, isotonic, beta, histogram, venn_abers or auto."),
    mode: Optional[str] = typer.Option(None, help="distribution or confidence (default: distribution when the input has per-label probabilities)."),
    folds: Optional[int] = typer.Option(None, help="k-fold cross-fitting (default 5)."),
    test_size: Optional[float] = typer.Option(None, help="Hold out this fraction as a test split instead of cross-fitting."),
    bins: int = typer.Option(15, help="Bins of ECE and MCE (20 to compare with the public Llama run)."),
    beta: int = typer.Option(100, help="Items per bin of the RMS calibration error."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples behind each 95% interval."),
    seed: int = typer.Option(0, help="Seed of splits, bootstrap and sample-size draws."),
    target: float = typer.Option(0.9, help="Accuracy the sample-size chart aims a threshold at."),
    prob_column: Optional[str] = typer.Option(None, help="Probability column (default: confidence)."),
    correct_column: Optional[str] = typer.Option(None, help="0/1 or true/false column: was the prediction right."),
    label_column: Optional[str] = typer.Option(None, help="Gold label column."),
    prediction_column: Optional[str] = typer.Option(None, help="Predicted label column (its probability is in --prob-column)."),
    text_column: Optional[str] = typer.Option(None, help="Text column, to keep duplicates together (default: text)."),
    positive_label: Optional[str] = typer.Option(None, help="With --label-column only: the label --prob-column is the probability of."),
    label_map: Optional[str] = typer.Option(None, help="Rename gold label values, e.g. 0=negative,1=positive."),
    records_key: Optional[str] = typer.Option(None, help="JSON input: key of the list of records (default: the only list)."),
    title: Optional[str] = typer.Option(None, help="Report title."),
    adapter: Optional[Path] = typer.Option(
        None, "--adapter", help="LoRA adapter directory the scores came from (default: the one `howsure score "
                                "--adapter` recorded); items it trained on are refused."),
    allow_overlap: bool = typer.Option(
        False, "--allow-overlap", help="Report even on items the --adapter trained on (the report then says so)."),
) -> None:
    """Calibrate honestly (cross-fitting or a held-out split) and report raw and calibrated metrics.

    Calibrated numbers come only from items the calibrator was not fitted on.
    """
    from howsure.io.scored_tables import load_scored_items
    from howsure.pipelines.adapter_guard import check_adapter_overlap
    from howsure.pipelines.evaluate import EvaluationConfig, evaluate as run_evaluation

    if folds is not None and test_size is not None:
        raise DataError(f"--folds {folds} and --test-size {test_size} exclude each other; choose one scheme")
    items = load_scored_items(
        input, prob_column=prob_column, correct_column=correct_column, label_column=label_column,
        prediction_column=prediction_column, text_column=text_column, positive_label=positive_label,
        label_map=parse_label_map(label_map), records_key=records_key,
    )
    adapter_overlap = check_adapter_overlap(input, items.texts, adapter=adapter, allow_overlap=allow_overlap)
    config = EvaluationConfig(
        calibrator=calibrator, mode=mode, n_folds=folds or 5, test_size=test_size, n_bins=bins, beta=beta,
        n_boot=bootstrap, seed=seed, target=target, title=title,
    )
    with err_console.status(f"calibrating {items.n_items} items with {calibrator} …"):
        result = run_evaluation(items, config, command=_command_line(), adapter_overlap=adapter_overlap)
        paths = result.write(out)
    print_summary(result.summary)
    console.print(f"report: [bold]{escape(str(paths['report']))}[/]")
    console.print(escape(f"summary: {paths['summary']}  calibrator: {paths['calibrator']}  "
                         f"predictions: {paths['predictions']}"),
                  highlight=False)


@command("report")
def report(
    summary: Path = typer.Argument(..., help="summary.json written by `howsure evaluate`."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="HTML file to write (default: report.html beside the summary)."),
) -> None:
    """Redraw the self-contained HTML report from an evaluation's summary.json."""
    from howsure.report import load_summary, write_html

    data = load_summary(summary)
    path = write_html(data, out or summary.with_name("report.html"))
    print_summary(data)
    console.print(f"report: [bold]{escape(str(path))}[/]")


def parse_label_map(text: str | None) -> dict[str, str] | None:
    """'0=negative,1=positive' -> {'0': 'negative', '1': 'positive'}."""
    if not text:
        return None
    mapping = {}
    for pair in text.split(","):
        value, sep, label = (part.strip() for part in pair.partition("="))
        if not sep or not value or not label:
            raise DataError(f"--label-map entry {pair!r} is not VALUE=LABEL; expected e.g. 0=negative,1=positive")
        mapping[value] = label
    return mapping


def print_summary(summary: dict) -> None:
    """The metric table of a summary, one column per measured set, intervals in grey."""
    from howsure.stats.metrics import METRICS
    from howsure.report import format_interval

    columns = summary["metrics"]
    table = Table(title=escape(str(summary["title"])), title_justify="left")
    table.add_column("metric")
    for column in columns:
        table.add_column(escape(str(column["title"])), justify="right")
    for name, info in METRICS.items():
        if not any(name in column["values"] for column in columns):
            continue
        cells = []
        for column in columns:
            value, interval = format_interval(column["values"].get(name))
            cells.append(f"{value} [dim]{interval}[/]")
        table.add_row(info.title, *cells)
    console.print(table)
    biases = [(column["short"] if "short" in column else column["title"], column["values"]["ece"]["bias"])
              for column in columns if (column["values"].get("ece") or {}).get("bias") is not None]
    if biases:
        listed = ", ".join(f"{bias:+.3f} {name}" for name, bias in biases)
        console.print(
            f"calibration-error intervals: 95 % bootstrap spread of the estimate, recentred on it; the "
            f"binned estimate runs high (bootstrap bias of the ECE: {listed}), so the population's ECE is "
            "nearer the estimate minus that bias", highlight=False,
        )
    calibration = summary["calibration"]
    chosen = f" → {calibration['chosen']}" if calibration.get("chosen") else ""
    console.print(f"mode: [bold]{calibration['mode']}[/] ({calibration['mode_description']})", highlight=False)
    console.print(f"calibrator: {calibration['calibrator']}{chosen}", highlight=False)
    console.print(f"honest scheme: {calibration['scheme']['description']}", highlight=False)
    for note in summary.get("notes", []):
        console.print(f"note: {escape(str(note))}", highlight=False)
