"""The finetune command: LoRA fine-tuning of the model on a labelled file and/or the review store's
reviewed items, with a progress bar, resume after an interruption, an optional merged model
directory, and (with --db) the result registered as a new model version with its own policy."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from howsure.cli.app import command, console, err_console, fail
from howsure.cli.format import certificate_line
from howsure.cli.scoring import ThreadsOption, open_backend, parse_label_map
from howsure.cli.service import cli_actor
from howsure.core.task import Task, load_task
from howsure.decisions.policy import adapter_checksum
from howsure.models import DEFAULT_MODEL


@command("finetune")
def finetune_command(
    train: Optional[Path] = typer.Option(None, "--train", help="Labelled training file (CSV, TSV, JSONL, JSON, Parquet); "
                                         "a share is held out by content hash for validation."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapter directory to write (and resume in)."),
    db: Optional[str] = typer.Option(None, "--db", help="Review store (SQLite path, sqlite:/// or postgresql:// URL): "
                                     "train on its reviewed items too, then register the adapter as a new policy "
                                     "version certified on items it never saw. Task and model: the active policy's."),
    task: Optional[str] = typer.Option(None, "--task", "-t", help="Task TOML file or bundled task name (default: "
                                       "sentiment; with --db the active policy's, which must match)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help=f"Preset name, model directory, .gguf file or hub "
                                        f"id (default: {DEFAULT_MODEL}; with --db the active policy's)."),
    calibration_share: float = typer.Option(
        0.2, "--calibration-share", help="With --db: share of review items kept out of training to fit the new "
                                         "policy's calibrator (besides the certification share, always kept out)."),
    fit_calibrator: str = typer.Option("auto", "--fit-calibrator", help="With --db: the new policy's calibrator "
                                       "(auto, a calibrator name, or none)."),
    split_seed: int = typer.Option(0, "--split-seed", help="With --db: salt of the certify/fit draw (as howsure "
                                   "recalibrate --seed)."),
    activate: bool = typer.Option(True, "--activate/--no-activate", help="With --db: make the new version active."),
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
    label_mass_weight: float = typer.Option(
        0.0, "--label-mass-weight", help="Weight of -log(the labels' total probability) in the loss: 0 trains the "
                                         "normalised label probabilities only, 1 the gold label's probability over "
                                         "the whole vocabulary (keeps the model answering with a label)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue from OUTPUT's last checkpoint (default)."),
    device: str = typer.Option("cpu", "--device", help="cpu (default), cuda, cuda:N or auto (bf16 autocast on a GPU with bf16)."),
    threads: Optional[int] = ThreadsOption,
    merge: Optional[Path] = typer.Option(None, "--merge", help="Also write the adapter merged into the model here "
                                         "(a model directory for --model)."),
) -> None:
    """Fine-tune the model with LoRA on the task's own prompt; the loss is the cross-entropy of the
    labels' probabilities as howsure scores them, at the answer position only.

    Interrupted? Run the same command again: it resumes from the last checkpoint."""
    from howsure.finetune import FinetuneConfig, read_labelled_file

    config = FinetuneConfig(
        rank=rank, alpha=alpha, dropout=dropout, target_modules=tuple(target_modules) if target_modules else None,
        learning_rate=learning_rate, epochs=epochs, max_steps=max_steps, batch_size=batch_size, max_length=max_length,
        seed=seed, validation_fraction=validation_fraction, eval_interval=eval_interval,
        checkpoint_interval=checkpoint_interval, patience=patience, label_mass_weight=label_mass_weight,
    )
    if train is None and db is None:
        raise fail("give --train FILE, --db URL, or both: there is nothing to train on")
    if not 0 <= calibration_share < 1:
        raise fail(f"--calibration-share must be in [0, 1), got {calibration_share!r}")
    if merge is not None:
        from howsure.backends.transformers.adapters import check_merge_output

        check_merge_output(merge)  # before training, not after it
    store = review_data = None
    if db is not None:
        store, the_task, model, review_data = _review_training_data(db, task, model, calibration_share, split_seed)
    else:
        the_task = load_task(task or "sentiment")
        model = model or DEFAULT_MODEL
    try:
        data = _combined(review_data, read_labelled_file(train, the_task, text_column, label_column,
                                                          parse_label_map(label_map)) if train else None)
        _train_and_register(the_task, data, output, model, config, resume, device, threads, merge, train, store,
                            fit_calibrator, split_seed, activate)
    finally:
        if store is not None:
            store.close()


def _review_training_data(db: str, task: Optional[str], model: Optional[str], calibration_share: float, seed: int):
    """(store, the active policy's task, the model, the trainable reviewed items), with one line
    on what was held out and why."""
    from howsure.service.feedback import default_certify_share
    from howsure.service.db import require_existing
    from howsure.service.store import ReviewStore
    from howsure.service.training_data import select_training_items

    store = ReviewStore(require_existing(db))
    try:
        active = store.active_policy()
        if active is None or not active.body.get("task"):
            raise fail("the store has no active policy with a task; serve one first (howsure serve --policy FILE)")
        the_task = Task.from_dict(active.body["task"])
        if task is not None and load_task(task).fingerprint() != the_task.fingerprint():
            raise fail(f"--task {task!r} is not the active policy's task {the_task.name!r}; leave --task out with --db")
        selection = select_training_items(store, the_task, certify_share=default_certify_share(store, any_model=True),
                                          fit_share=calibration_share, seed=seed)
    except BaseException:
        store.close()
        raise
    held = selection.held_out
    console.print(escape(
        f"{len(selection.item_ids)} reviewed items to train on; kept out: {held['audit']} audited, "
        f"{held['certified']} the active policy was certified on, {held['certify_share']} for the next "
        f"certificate, {held['calibration']} for its calibrator, {held['duplicate_of_held_out']} copies of those"),
        highlight=False)
    return store, the_task, model or active.body.get("model_id") or DEFAULT_MODEL, selection.data


def _combined(first, second):
    from howsure.finetune import LabelledTexts

    parts = [part for part in (first, second) if part is not None]
    return LabelledTexts([t for p in parts for t in p.texts], [label for p in parts for label in p.labels])


def _train_and_register(the_task, data, output, model, config, resume, device, threads, merge, train, store,
                        fit_calibrator, split_seed, activate) -> None:
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from howsure.finetune import finetune, merge_adapter

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
                              source=" + ".join(x for x in (str(train) if train else None,
                                                            "reviewed items" if store else None) if x), on_step=on_step)
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
    if store is not None:
        _register(store, the_task, output, model, device, threads, fit_calibrator, split_seed, activate)


def _register(store, the_task, output, model, device, threads, fit_calibrator, split_seed, activate) -> None:
    """Score the items the adapter never saw through it and add the new policy version."""
    import numpy as np

    from howsure.service.training_data import register_finetuned

    checksum = adapter_checksum(output)
    registered = [r for r in store.policy_history() if (r.body.get("adapter") or {}).get("checksum") == checksum]
    if registered:  # a rerun of a finished run: the version exists, adding it twice would only confuse rollback
        console.print(escape(f"this adapter is already registered as policy version {registered[-1].version}"),
                      highlight=False)
        return
    backend = open_backend(model, "float32", threads, device=device, adapter=str(output))

    def rescore(texts):
        scores = backend.label_scores(the_task, list(texts), top_k=1)
        return np.vstack([np.asarray(score.probabilities, dtype=np.float64) for score in scores])

    record, report = register_finetuned(store, output, task=the_task, model=model, rescore=rescore,
                                        actor=cli_actor(), calibrator=fit_calibrator, seed=split_seed,
                                        activate=activate)
    state = "is now active" if record.active else "is stored, not active (howsure policy rollback --to it)"
    console.print(escape(
        f"policy version {record.version} ({record.policy_id}) {state}: the adapter's scores on "
        f"{report['n_reviewed']} reviewed items it never saw ({report['left_out_trained']} it trained on left out), "
        f"calibrator fitted on {report['fit']['n']}, threshold certified on {report['certify']['n']}"), highlight=False)
    console.print(escape(certificate_line(record.body["guarantee"]) if record.body["rule"] == "top_label"
                         else "per-class certificate: howsure policy list"), highlight=False)
    for warning in report["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
