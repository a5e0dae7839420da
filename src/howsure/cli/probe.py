"""The probe commands: ``howsure probe fit`` fits a linear probe on a task's answer-position hidden
states from a labelled file and prints each layer's cross-validated AUROC; ``howsure score
--scorer probe --probe FILE`` (in `howsure.cli.scoring`) scores with it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import app, command, console, err_console, fail
from howsure.cli.scoring import AdapterOption, DeviceOption, DtypeOption, ModelOption, TaskOption, ThreadsOption
from howsure.cli.scoring import open_backend, read_gold_rows
from howsure.core.task import load_task
from howsure.errors import DataError

probe_app = typer.Typer(help="Linear probes on hidden states: fit one, then score with `score --scorer probe`.",
                        no_args_is_help=True)
app.add_typer(probe_app, name="probe")


def parse_layers(value: Optional[str]) -> Optional[list[int]]:
    """``"4,8,12"`` or ``"2-10"`` (or both, comma-separated) -> layer indices; None for all."""
    if not value:
        return None
    layers: list[int] = []
    for part in value.split(","):
        low, sep, high = part.strip().partition("-")
        try:
            layers.extend(range(int(low), int(high) + 1) if sep else [int(low)])
        except ValueError:
            raise DataError(f"--layers {value!r}: expected numbers and ranges like 4,8,12-16") from None
    return sorted(set(layers))


@command("fit", group=probe_app)
def probe_fit(
    input: Path = typer.Option(..., "--input", "-i", help="Labelled file (CSV, TSV, JSONL, JSON, Parquet)."),
    output: Path = typer.Option(..., "--output", "-o", help="Probe JSON file to write."),
    task: str = TaskOption,
    model: str = ModelOption,
    text_column: str = typer.Option("text", help="Column holding the texts."),
    label_column: str = typer.Option("label", help="Column holding the gold labels."),
    label_map: Optional[list[str]] = typer.Option(None, "--label-map", help="RAW=LABEL, repeatable (e.g. 1=positive)."),
    group_column: Optional[str] = typer.Option(None, help="Items sharing this column's value stay in one fold "
                                               "(default: equal texts do)."),
    layers: Optional[str] = typer.Option(None, help="Candidate layers, e.g. 4,8,12-16 (default: all; 0 = embeddings)."),
    folds: int = typer.Option(5, help="Cross-validation folds (grouped, stratified)."),
    seed: int = typer.Option(0, help="Seed of the folds."),
    C: float = typer.Option(0.05, "--C", help="Inverse L2 strength of the logistic regression (standardised states)."),
    nested: bool = typer.Option(True, "--nested/--no-nested", help="Also estimate the chosen probe's AUROC by nested "
                                "cross-fitting (the layer chosen on training folds only)."),
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    device: str = DeviceOption,
    batch_size: int = typer.Option(32, help="Texts per forward pass."),
    adapter: Optional[Path] = AdapterOption,
) -> None:
    """Fit a probe on the answer-position hidden states: AUROC per layer, the best layer fitted on every item."""
    from rich.progress import Progress

    from howsure.io.tables import read_table
    from howsure.io.texts import require_column
    from howsure.probes.probe import save_probe
    from howsure.probes.scorer import fit_task_probe

    # Before the hidden states, which take minutes: a bad value must not cost them.
    if not (C > 0 and math.isfinite(C)):
        raise fail(f"--C must be a number > 0, got {C!r}")
    if folds < 2:
        raise fail(f"--folds must be at least 2, got {folds!r}")
    the_task = load_task(task)
    rows, gold = read_gold_rows(input, text_column, label_column, label_map)
    groups = None
    if group_column:
        frame = read_table(input)
        require_column(frame, group_column, "group")
        groups = [str(v) for v in frame[group_column].tolist()]
    backend = open_backend(model, dtype, threads, batch_size, device, adapter=str(adapter) if adapter else None)
    with Progress(console=err_console) as bar:
        job = bar.add_task("hidden states", total=len(rows.texts))
        probe, scores, crossfit = fit_task_probe(
            backend, the_task, rows.texts, gold, groups=groups, progress=lambda n: bar.advance(job, n),
            layers=parse_layers(layers), n_folds=folds, seed=seed, C=C, nested=nested)
    save_probe(probe, output)
    table = Table(title=f"Probe AUROC per layer ({folds}-fold grouped cross-validation, {len(rows.texts)} items)")
    table.add_column("layer", justify="right")
    table.add_column("AUROC", justify="right")
    for layer, value in zip(scores.layers, scores.auroc):
        mark = "  <- chosen" if layer == probe.layer else ""
        table.add_row(str(layer), f"{value:.4f}{mark}")
    console.print(table)
    chosen = scores.auroc[scores.layers.index(probe.layer)]
    console.print(f"chosen layer: {probe.layer} (AUROC {chosen:.4f} cross-validated)", highlight=False)
    if crossfit is not None:
        console.print(f"nested cross-fitted AUROC (layer chosen on training folds only): {crossfit.auroc:.4f}; "
                      f"layers chosen per outer fold: {crossfit.chosen_layers}", highlight=False)
    console.print(escape(f"probe -> {output}"))
