"""`howsure compare`: a base and a fine-tuned model's scores on the same items, before / after."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import command, console, err_console
from howsure.cli.evaluation import parse_label_map
from howsure.errors import DataError


def parse_targets(text: str) -> tuple[float, ...]:
    """'0.8,0.9' -> (0.8, 0.9); each is checked as a target accuracy by the pipeline."""
    targets = []
    for part in text.split(","):
        try:
            targets.append(float(part))
        except ValueError:
            raise DataError(f"--targets entry {part.strip()!r} is not a number; expected e.g. 0.8,0.85,0.9,0.95") from None
    return tuple(targets)


@command("compare")
def compare(
    base: Path = typer.Argument(..., help="The base model's `howsure score` output (or any scored table)."),
    tuned: Path = typer.Argument(..., help="The fine-tuned model's scores of the same items."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for comparison.html and comparison.json."),
    categories: Optional[Path] = typer.Option(None, help="Table with text and category (and domain) columns, matched by text, "
                                                          "for the per-category view (default: the scored files' own columns)."),
    calibrator: str = typer.Option("auto", help="temperature, platt, isotonic, beta, histogram, venn_abers or auto."),
    mode: Optional[str] = typer.Option(None, help="distribution or confidence (default: distribution when possible)."),
    folds: Optional[int] = typer.Option(None, help="k-fold cross-fitting (default 5)."),
    test_size: Optional[float] = typer.Option(None, help="Hold out this fraction as a test split instead of cross-fitting."),
    bins: int = typer.Option(15, help="Bins of ECE and MCE."),
    beta: int = typer.Option(100, help="Items per bin of the RMS calibration error."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples behind each 95% interval."),
    seed: int = typer.Option(0, help="Seed of splits, bootstrap and sample-size draws."),
    target: float = typer.Option(0.9, help="Target accuracy of the certified automation share."),
    delta: float = typer.Option(0.05, help="The certificate may fail with probability at most delta."),
    targets: str = typer.Option("0.8,0.85,0.9,0.95", help="Target accuracies of the automation table."),
    prob_column: Optional[str] = typer.Option(None, help="Probability column (default: confidence)."),
    correct_column: Optional[str] = typer.Option(None, help="0/1 or true/false column: was the prediction right."),
    label_column: Optional[str] = typer.Option(None, help="Gold label column."),
    prediction_column: Optional[str] = typer.Option(None, help="Predicted label column."),
    text_column: Optional[str] = typer.Option(None, help="Text column, to match the two files' items (default: text)."),
    label_map: Optional[str] = typer.Option(None, help="Rename gold label values, e.g. 0=negative,1=positive."),
    title: Optional[str] = typer.Option(None, help="Report title."),
    adapter: Optional[Path] = typer.Option(
        None, "--adapter", help="LoRA adapter directory the fine-tuned scores came from (default: the one each "
                                "file's `howsure score --adapter` recorded); items it trained on are refused."),
    allow_overlap: bool = typer.Option(
        False, "--allow-overlap", help="Compare even on items an adapter trained on (the report then says so)."),
) -> None:
    """Base against fine-tuned on the same held-out items: metrics with intervals, certified
    automation, confusion matrices, reliability and confidence plots, per-category view."""
    from howsure.pipelines.adapter_guard import check_adapter_overlap
    from howsure.pipelines.evaluate import EvaluationConfig
    from howsure.pipelines.compare import (CompareConfig, compare as run_compare, groups_from_table,
                                           load_scored_file, write_comparison)

    if folds is not None and test_size is not None:
        raise DataError(f"--folds {folds} and --test-size {test_size} exclude each other; choose one scheme")
    columns = dict(prob_column=prob_column, correct_column=correct_column, label_column=label_column,
                   prediction_column=prediction_column, text_column=text_column, label_map=parse_label_map(label_map))
    sides = [load_scored_file(path, **columns) for path in (base, tuned)]
    for side, flag in zip(sides, (None, adapter)):  # --adapter is the fine-tuned side's
        side.adapter_overlap = check_adapter_overlap(side.path, side.items.texts, adapter=flag,
                                                     allow_overlap=allow_overlap)
    if categories is not None:
        for side in sides:
            if side.items.texts is not None:
                side.groups = groups_from_table(categories, side.items.texts)
    config = CompareConfig(
        evaluation=EvaluationConfig(calibrator=calibrator, mode=mode, n_folds=folds or 5, test_size=test_size,
                                    n_bins=bins, beta=beta, n_boot=bootstrap, seed=seed, target=target),
        delta=delta, targets=parse_targets(targets),
    )
    with err_console.status(f"evaluating both sides ({sides[0].items.n_items} items each) …"):
        command_line = " ".join(shlex.quote(a) for a in ["howsure", *sys.argv[1:]])
        summary = run_compare(*sides, config, command=command_line, title=title)
        html_path, json_path = write_comparison(summary, out)
    print_comparison(summary)
    console.print(f"report: [bold]{escape(str(html_path))}[/]")
    console.print(escape(f"summary: {json_path}"), highlight=False)


def print_comparison(summary: dict) -> None:
    """Headline metrics and the certified share, base against fine-tuned, intervals in grey."""
    from howsure.stats.metrics import METRICS
    from howsure.report import format_interval

    sides = summary["sides"]
    table = Table(title=escape(str(summary["title"])), title_justify="left")
    for heading in ("metric", "base raw", "fine-tuned raw", "base calibrated", "fine-tuned calibrated"):
        table.add_column(heading, justify="left" if heading == "metric" else "right")
    for name in ("accuracy", "ece", "brier", "auroc"):
        cells = []
        for view in ("raw", "calibrated"):
            for key in ("base", "tuned"):
                value, interval = format_interval(sides[key]["headline"][view].get(name))
                cells.append(f"{value} [dim]{interval}[/]")
        table.add_row(METRICS[name].title, *cells)
    console.print(table)
    settings = summary["settings"]
    for key in ("base", "tuned"):
        certificate = sides[key]["certificate"]
        if certificate is None:
            continue
        share = certificate.get("automation_rate") or 0.0
        console.print(f"{sides[key]['name']}: certified automation share {share:.1%} at target "
                      f"{settings['target']:g}, delta {settings['delta']:g}", highlight=False)
    for note in summary.get("notes", []):
        console.print(f"note: {escape(str(note))}", highlight=False)
