"""``howsure qa-report``: every confidence estimator of a `howsure qa` output (and a probe on its
saved hidden states) through the same calibration, metrics, certified thresholds and report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import command, console, err_console
from howsure.io.records import read_records


@command("qa-report")
def qa_report_command(
    input: Path = typer.Option(..., "--input", "-i", help="`howsure qa` output (JSONL, one record per question)."),
    output: Path = typer.Option(..., "--output", "-o", help="HTML report to write."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the summary (every number) as JSON."),
    hidden: Optional[Path] = typer.Option(None, "--hidden", help="Hidden states from `howsure qa --save-hidden` (.npy): "
                                          "adds a cross-fitted linear probe as an estimator."),
    calibrator: str = typer.Option("platt", help="Calibrator of every estimator (temperature, platt, isotonic, beta, "
                                   "histogram, venn_abers, auto or none)."),
    target: float = typer.Option(0.8, help="Accuracy the answered questions must have (certified)."),
    delta: float = typer.Option(0.05, help="The certificate may fail with probability at most this."),
    folds: int = typer.Option(5, help="Cross-fitting folds (grouped by question id)."),
    bootstrap: int = typer.Option(1000, help="Bootstrap resamples behind each 95% interval."),
    seed: int = typer.Option(0, help="Seed of folds, splits and bootstrap."),
    targets_out: Optional[Path] = typer.Option(None, "--targets-out", help="Write each record plus target_confidence, "
                                               "the probe's cross-fitted P(correct) (needs --hidden): the input of "
                                               "`howsure finetune-verbal`."),
    markdown: bool = typer.Option(False, "--markdown", help="Print the table as Markdown (every metric raw and "
                                  "calibrated with its interval, the probe's layers) instead of the terminal table."),
) -> None:
    """Compare confidence estimators for free-form answers: one table, one reliability diagram each."""
    from howsure.pipelines.qa_report import (QAReportConfig, hidden_state_probe, load_hidden, qa_records_from_dicts,
                                             qa_report, write_targets)
    from howsure.report.qa import markdown_table, write_qa_report

    rows = read_records(input)  # once: the arrays below and, with --targets-out, the records written back
    records = qa_records_from_dicts(rows, repr(str(input)))
    states = load_hidden(hidden, records.correct.size) if hidden is not None else None
    config = QAReportConfig(calibrator=calibrator, n_folds=folds, target_accuracy=target, delta=delta,
                            n_boot=bootstrap, seed=seed)
    if targets_out is not None and states is None:
        raise typer.BadParameter("--targets-out writes the probe's values: give --hidden too", param_hint="--targets-out")
    with err_console.status("cross-fitting and certifying every estimator …"):
        probe = None if states is None else hidden_state_probe(records, states, config)
        summary = qa_report(records, probe=probe, config=config, source=str(input),
                            command="howsure " + " ".join(sys.argv[1:]))
    if targets_out is not None:
        write_targets(rows, probe, targets_out)
        err_console.print(escape(f"probe targets -> {targets_out}"))
    write_qa_report(summary, output, json_out)
    if markdown:
        typer.echo(markdown_table(summary), nl=False)
        err_console.print(escape(f"report -> {output}" + (f", summary -> {json_out}" if json_out else "")))
        return
    table = Table(title=f"{summary['input']['n_items']} questions, accuracy {summary['input']['accuracy']:.1%}")
    table.add_column("estimator", no_wrap=True, min_width=18)  # the names are what the table is read by
    for column in ("scored", "null", "AUROC", "ECE raw", "ECE cal", "RMS raw", "RMS cal", "answers auto", "flags"):
        table.add_column(column, justify="left" if column == "flags" else "right")
    for e in summary["estimators"]:
        raw, cal, cert = e["raw"] or {}, e["calibrated"] or {}, e["certification"]

        def value(side, metric):
            entry = side.get(metric) or {}
            return "–" if entry.get("value") is None else f"{entry['value']:.3f}"

        auto = "–" if not cert else (f"{cert['automation_rate']:.0%}" if cert["certified"] else "none")
        table.add_row(escape(e["name"]), str(e["n_scored"]), str(e["n_null"]), value(raw, "auroc"), value(raw, "ece"),
                      value(cal, "ece"), value(raw, "rms_calibration_error"), value(cal, "rms_calibration_error"), auto,
                      escape("; ".join(f.split(":")[0] for f in e["flags"])))
    console.print(table)
    if summary["probe"]:
        console.print(f"probe: best layer {summary['probe']['best_layer']} (cross-validated AUROC per layer in the "
                      f"summary); chosen per outer fold: {summary['probe']['chosen_layers']}. Intervals: --markdown")
    console.print(escape(f"report -> {output}" + (f", summary -> {json_out}" if json_out else "")))
