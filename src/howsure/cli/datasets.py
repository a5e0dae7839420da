"""Commands that write data sets: the seeded synthetic sentiment set and the deduplicated seed_cwc set."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.markup import escape

from howsure.cli.app import app, command, console
from howsure.datasets.hash_split import parse_fractions
from howsure.datasets.output import WRITERS, write_rows
from howsure.datasets.seed_cwc import load_seed_cwc
from howsure.datasets.seed_sentiment import COLUMNS, duplicate_share, generate_seed_sentiment, measured_bias
from howsure.errors import DataError

datasets_app = typer.Typer(help="Data sets: generate the synthetic sentiment set, read seed_cwc without its flaws.",
                           no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")


@command("seed-sentiment", group=datasets_app)
def seed_sentiment(
    output: Path = typer.Option(..., "--output", "-o", help="CSV, TSV or JSONL file to write (id,text,label,category,domain)."),
    n: int = typer.Option(10_000, "--n", help="Rows to generate."),
    bias: float = typer.Option(0.9, help="Share of each category's items set in its polarity's favoured domain "
                                         "(positive: sports, negative: work); 0.5 = no bias."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same rows."),
    other_share: float = typer.Option(0.0, help="Share of items set in everyday life (domain other), outside the bias."),
) -> None:
    """Generate the 8-category synthetic sentiment set with a domain bias."""

    rows = generate_seed_sentiment(n=n, bias=bias, seed=seed, other_share=other_share)
    path = write_rows(rows, output, COLUMNS)
    console.print(escape(f"wrote {len(rows)} rows to {path}: measured bias {measured_bias(rows):.3f}, "
                         f"duplicate texts {duplicate_share(rows):.2%}"), highlight=False)


@command("seed-cwc", group=datasets_app)
def seed_cwc(
    output_dir: Path = typer.Option(..., "--output-dir", "-o", help="Folder for one file per split and manifest.json."),
    source: Path = typer.Option(Path("../shared/data/sentiment/seed_cwc"), help="Folder of the eight <category>.txt files."),
    split: str = typer.Option("train=0.6,calibration=0.2,test=0.2", help="Sides and their fractions, in order."),
    salt: str = typer.Option("", help="Salt of the content hash; another salt gives another split."),
    format: str = typer.Option("csv", help="csv, tsv or jsonl."),
) -> None:
    """Deduplicate the public seed_cwc set and split it by content hash (no text on two sides)."""

    if f".{format}" not in WRITERS:
        raise DataError(f"--format {format!r} is not one of {', '.join(w[1:] for w in WRITERS)}")
    data = load_seed_cwc(source, fractions=parse_fractions(split), salt=salt)
    written = {name: write_rows(data.split(name), output_dir / f"{name}.{format}", COLUMNS)
               for name in data.fractions}
    manifest_path = output_dir / "manifest.json"
    manifest_path.write_text(json.dumps(data.manifest(), indent=1, ensure_ascii=False) + "\n", "utf-8")
    counts = data.counts
    console.print(escape(
        f"{counts['lines']} lines -> {counts['rows']} texts ({counts['duplicate_lines_dropped']} duplicate lines, "
        f"{counts['conflicting_texts_dropped']} texts of conflicting polarity dropped)"), highlight=False)
    for name, path in written.items():
        console.print(escape(f"  {name}: {counts['per_split'][name]} rows -> {path}"), highlight=False)
    console.print(escape(f"  manifest: {manifest_path}"), highlight=False)
