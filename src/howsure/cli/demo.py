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
) -> None:
    """Score 2,000 Rotten Tomatoes sentences, calibrate honestly, certify a threshold, write a report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from howsure.cli.evaluation import print_summary
    from howsure.pipelines.demo import DemoConfig, run_demo

    started = time.perf_counter()
    config = DemoConfig(model=model, dtype=dtype, device=device, threads=threads, limit=limit, target_accuracy=target, delta=delta)
    with one_line_warnings(), Progress("[progress.description]{task.description}", BarColumn(),
                                             MofNCompleteColumn(), TimeRemainingColumn(), console=err_console) as bar:
        job = bar.add_task("scoring", total=None)
        result = run_demo(out, config, progress=lambda done, total: bar.update(job, completed=done, total=total))

    print_summary(result.summary)
    console.print(escape(result.policy.summary()), highlight=False)
    console.print(f"report: [bold]{escape(str(result.report_path))}[/]")
    console.print(escape(f"policy: {result.policy_path}   scores: {result.scores_path}"))
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in result.stage_seconds.items())
    console.print(f"stages: {stages}", highlight=False)
    console.print(f"done in {time.perf_counter() - started:.0f} s")
