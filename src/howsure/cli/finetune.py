"""The finetune command: LoRA fine-tuning of the model on a labelled file, with a progress bar,
resume after an interruption, and an optional merged model directory."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from howsure.cli.app import command, console, err_console, fail
from howsure.cli.scoring import ModelOption, TaskOption, ThreadsOption, parse_label_map


@command("finetune")
def finetune_command(
    train: Path = typer.Option(..., "--train", help="Labelled training file (CSV, TSV, JSONL, JSON, Parquet); "
                               "a share is held out by content hash for validation."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapter directory to write (and resume in)."),
    task: str = TaskOption,
    model: str = ModelOption,
    text_column: str = typer.Option("text", help="Column holding the texts."),
    label_column: str = typer.Option("label", help="Column holding the gold labels."),
    label_map: Optional[list[str]] = typer.Option(None, "--label-map", help="RAW=LABEL, repeatable (e.g. 1=positive)."),
    rank: int = typer.Option(8, help="LoRA rank."),
    alpha: float = typer.Option(16.0, help="LoRA alpha (updates scaled by alpha/rank)."),
    dropout: float = typer.Option(0.05, help="LoRA dropout while training."),
    target_modules: Optional[list[str]] = typer.Option(
        None, "--target-module", help="Linear layer name to adapt, repeatable (default: every attention and MLP projection)."),
    learning_rate: float = typer.Option(2e-4, help="AdamW learning rate, decayed linearly to 0."),
    epochs: int = typer.Option(1, help="Passes over the training split."),
    max_steps: Optional[int] = typer.Option(None, help="Stop after this many optimizer steps instead."),
    batch_size: int = typer.Option(16, help="Training texts per step."),
    max_length: int = typer.Option(256, help="Longest prompt in tokens (a longer text is an error)."),
    seed: int = typer.Option(0, help="Seed of the adapter initialisation, dropout and data order."),
    validation_fraction: float = typer.Option(0.1, help="Share of distinct texts held out for validation."),
    eval_interval: int = typer.Option(50, help="Steps between validation losses."),
    checkpoint_interval: int = typer.Option(50, help="Steps between resumable checkpoints."),
    patience: int = typer.Option(5, help="Evaluations without a better validation loss before stopping (0: never)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUTPUT's last checkpoint (default)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, cuda:N or auto (bf16 autocast on a GPU with bf16)."),
    threads: Optional[int] = ThreadsOption,
    merge: Optional[Path] = typer.Option(None, "--merge", help="Also write the adapter merged into the model here "
                                         "(a model directory for --model)."),
) -> None:
    """Fine-tune the model with LoRA on the task's own prompt; the loss is the cross-entropy of the
    labels' probabilities as howsure scores them, at the answer position only.

    Interrupted? Run the same command again: it resumes from the last checkpoint."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from howsure.finetune import FinetuneConfig, finetune, merge_adapter, read_labelled_file
    from howsure.core.task import load_task

    config = FinetuneConfig(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(target_modules) if target_modules else None,
        learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length,
        seed=seed, validation_fraction=validation_fraction, eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval, patience=patience,
    )
    the_task = load_task(task)
    data = read_labelled_file(train, the_task, text_column, label_column, parse_label_map(label_map))
    if threads:
        torch.set_num_threads(threads)
    reached = {"step": 0}
    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), "steps",
                  TextColumn("loss {task.fields[loss]}"), TextColumn("val {task.fields[validation]}"),
                  TextColumn("best {task.fields[best]}"), TimeRemainingColumn(), console=err_console) as bar:
        job = bar.add_task("fine-tuning", total=None, loss="-", validation="-", best="-")

        def on_step(report) -> None:
            reached["step"] = report.step
            bar.update(job, completed=report.step, total=report.total_steps, loss=f"{report.loss:.4f}",
                       validation="-" if report.validation_loss is None else f"{report.validation_loss:.4f}",
                       best="-" if report.best_validation_loss is None else f"{report.best_validation_loss:.4f}")

        try:
            result = finetune(the_task, data, output, model=model, config=config, resume=resume, device=device,
                              source=str(train), on_step=on_step)
        except KeyboardInterrupt:
            raise fail(f"interrupted at step {reached['step']}; run the same command again to resume from the last "
                       "checkpoint", code=130) from None
    if result.already_finished:
        console.print(escape(f"{output} already holds this run's adapter ({result.steps} steps); nothing to do"))
    else:
        resumed = f", resumed from step {result.resumed_from}" if result.resumed_from is not None else ""
        console.print(escape(f"fine-tuned {result.steps} step(s){resumed}; best validation loss "
                             f"{result.best_validation_loss:.4f} at step {result.best_step} -> {output}"))
    if merge is not None:
        with err_console.status(f"merging into {escape(str(merge))} …"):
            merge_adapter(output, merge, model)
        console.print(escape(f"merged model -> {merge} (use --model {merge})"))
