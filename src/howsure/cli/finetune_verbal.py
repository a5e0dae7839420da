"""The finetune-verbal command: LoRA fine-tuning that teaches the model to end its own answer
with "Confidence: p", p being each question's target (a probe's cross-fitted P(correct)), with
the trainer of `howsure finetune` (progress bar, validation split, best checkpoint, resume)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from howsure.cli.app import command, console, err_console, fail
from howsure.cli.scoring import ThreadsOption
from howsure.models import DEFAULT_MODEL


@command("finetune-verbal")
def finetune_verbal_command(
    input: Path = typer.Option(..., "--input", "-i", help="Records (JSONL, CSV, ...) with question, the model's own "
                               "answer, correct and the target confidence; a share of the questions is held out "
                               "by content hash for validation and never trained on."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapter directory to write (and resume in)."),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Preset name, model directory, .gguf or hub id."),
    target_column: str = typer.Option("target_confidence", help="Column with the confidence to teach, in [0, 1]."),
    question_column: str = typer.Option("question", help="Column with the questions."),
    answer_column: str = typer.Option("answer", help="Column with the model's own answers."),
    correct_column: str = typer.Option("correct", help="Column saying whether each answer is right."),
    decimals: int = typer.Option(1, help="Decimals of the taught confidence (Confidence: 0.7 with 1)."),
    rank: int = typer.Option(8, help="LoRA rank."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (updates scaled by alpha/rank)."),
    learning_rate: float = typer.Option(2e-4, help="AdamW learning rate, decayed linearly to 0."),
    epochs: int = typer.Option(1, help="Passes over the training split."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps instead."),
    batch_size: int = typer.Option(16, help="Records per step."),
    max_length: int = typer.Option(256, help="Longest prompt + target in tokens (a longer record is an error)."),
    seed: int = typer.Option(0, help="Seed of the adapter initialisation, dropout and data order."),
    validation_fraction: float = typer.Option(0.1, help="Share of distinct questions held out for validation."),
    eval_interval: int = typer.Option(50, help="Steps between validation losses."),
    checkpoint_interval: int = typer.Option(50, help="Steps between resumable checkpoints."),
    patience: int = typer.Option(5, help="Evaluations without a better validation loss before stopping (0: never)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUTPUT's last checkpoint (default)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, cuda:N or auto."),
    threads: Optional[int] = ThreadsOption,
) -> None:
    """Teach the model to say how sure it is: after its answer, "Confidence: p" with p the
    record's target. The loss is on those target tokens only.

    Interrupted? Run the same command again: it resumes from the last checkpoint."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from howsure.finetune import FinetuneConfig
    from howsure.finetune.verbal import finetune_verbal, read_verbal_file

    config = FinetuneConfig(rank=rank, alpha=alpha, learning_rate=learning_rate, epochs=epochs, max_steps=max_steps,
                            batch_size=batch_size, max_length=max_length, seed=seed,
                            validation_fraction=validation_fraction, eval_interval=eval_interval,
                            checkpoint_interval=checkpoint_interval, patience=patience)
    records = read_verbal_file(input, target_column, question_column, answer_column, correct_column)
    if threads:
        torch.set_num_threads(threads)
    reached = {"step": 0}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), "steps",
                  TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[validation]}"),
                  TimeRemainingColumn(), console=err_console) as bar:
        job = bar.add_task("teaching confidence", total=None, loss="-", validation="-")

        def on_step(report) -> None:
            reached["step"] = report.step
            bar.update(job, completed=report.step, total=report.total_steps, loss=f"{report.loss:.4f}",
                       validation="-" if report.validation_loss is None else f"{report.validation_loss:.4f}")

        try:
            result = finetune_verbal(records, output, model=model, config=config, decimals=decimals, resume=resume,
                                     device=device, source=str(input), on_step=on_step)
        except KeyboardInterrupt:
            raise fail(f"interrupted at step {reached['step']}; run the same command again to resume from the last "
                       "checkpoint", code=130) from None
    split = result.metadata["split"]
    if result.already_finished:
        console.print(escape(f"{output} already holds this run's adapter ({result.steps} steps); nothing to do"))
    else:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""
        console.print(escape(
            f"taught 'Confidence: p' on {split['train']['n_items']} questions ({split['validation']['n_items']} held "
            f"out for validation) in {result.steps} step(s){resumed}; best validation loss "
            f"{result.best_validation_loss:.4f} at step {result.best_step} -> {output}"), highlight=False)
