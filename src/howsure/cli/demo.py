"""`howsure demo`: the whole loop on the bundled sample with the bundled model."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from howsure.cli.app import command, console, err_console
from howsure.cli.scoring import DeviceOption, DtypeOption, one_line_warnings
from howsure.models import DEFAULT_MODEL
from howsure.cli.evaluation import print_summary


@command("demo")
def demo(
    out: Path = typer.Option(Path("howsure-demo"), "--out", "-o", help="Folder for scores, report and policy."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Preset, model directory, .gguf file or hub id."),
    dtype: str = DtypeOption,
    device: str = DeviceOption,
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N of the 2,000 sample sentences."),
    target: float = typer.Option(0.9, "--target", help="Accuracy the certified threshold guarantees."),
    delta: float = typer.Option(0.05, "--delta", help="Risk that the guarantee fails."),
    finetune: bool = typer.Option(True, "--finetune/--no-finetune",
                                  help="Fine-tune on the bundled training sample and compare (default); "
                                       "--no-finetune: the base model only."),
    adapter: Optional[Path] = typer.Option(None, "--adapter", help="Use this adapter directory (howsure finetune) "
                                           "instead of training one."),
) -> None:
    """Score 2,000 Rotten Tomatoes sentences, calibrate honestly, certify a threshold, write a report;
    then fine-tune on other sentences (the bundled training sample) and show what it certifies."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from howsure.pipelines.demo import DemoConfig, run_demo

    started = time.perf_counter()
    config = DemoConfig(model=model, dtype=dtype, device=device, threads=threads, limit=limit, target_accuracy=target, delta=delta,
                        finetune=finetune or adapter is not None, adapter=None if adapter is None else str(adapter))
    with one_line_warnings(), Progress("[progress.description]{task.description}", BarColumn(),
                                             MofNCompleteColumn(), TimeRemainingColumn(), console=err_console) as bar:
        job = bar.add_task("scoring", total=None)
        training = tuned = None

        def on_step(report) -> None:
            nonlocal training
            if training is None:
                training = bar.add_task("fine-tuning", total=report.total_steps)
            validation = "" if report.validation_loss is None else f", validation {report.validation_loss:.3f}"
            bar.update(training, completed=report.step,
                       description=f"fine-tuning (loss {report.loss:.3f}{validation})")

        def on_tuned(done: int, total: int) -> None:
            nonlocal tuned
            if tuned is None:
                tuned = bar.add_task("scoring (fine-tuned)", total=total)
            bar.update(tuned, completed=done, total=total)

        result = run_demo(out, config, progress=lambda done, total: bar.update(job, completed=done, total=total),
                          training_progress=on_step, tuned_progress=on_tuned)

    print_summary(result.summary)
    console.print(escape(result.policy.summary()), highlight=False)
    console.print(f"report: [bold]{escape(str(result.report_path))}[/]")
    console.print(escape(f"policy: {result.policy_path}   scores: {result.scores_path}"))
    if result.automation is not None:
        print_automation_table(result.automation)
        console.print(escape(f"fine-tuned policy: {result.tuned_policy_path}   before/after report: "
                             f"{result.comparison_path}"))
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.stage_seconds.items())
    console.print(f"stages: {stages}", highlight=False)
    console.print(escape(f"on: {result.machine}"), highlight=False)
    console.print(f"done in {time.perf_counter() - started:.0f} s")


def print_automation_table(automation: dict) -> None:
    """Target accuracy against certified automation share, base and fine-tuned side by side."""
    from rich.table import Table

    table = Table(title=f"certified automation share (delta {automation['delta']:g})", title_justify="left")
    table.add_column("target accuracy", justify="right")
    for name in ("base", "fine-tuned"):
        table.add_column(f"{name} (accuracy {automation[name]['accuracy']:.3f})", justify="right")
    for target in automation["targets"]:
        key = f"{target:g}"
        marker = " (stated target)" if target == automation["stated_target"] else ""
        table.add_row(f"{target:.2f}{marker}",
                      *(f"{automation[name]['certified_share'][key]:.1%}" for name in ("base", "fine-tuned")))
    console.print(table)
