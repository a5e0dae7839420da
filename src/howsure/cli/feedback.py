"""Learning-loop commands: recalibrate, policy history / rollback, drift, export.

    howsure recalibrate --db reviews.db          refit + re-certify from reviews, new active version
    howsure policy list --db reviews.db          every stored version, the active one marked
    howsure policy rollback --db reviews.db      back to the version before the active one
    howsure drift --db reviews.db                live vs certified confidences; exit 1 on alarm
    howsure export --db reviews.db --output reviewed.jsonl
    howsure export --db reviews.db --format openai-chat --output chat.jsonl   (hosted fine-tuning)

Nothing here imports torch: the store, the calibrators and scipy are all it needs.
"""

from __future__ import annotations

import getpass
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, List, Optional

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from howsure.cli.app import app, command, console, err_console
from howsure.cli.format import certificate_line
from howsure.cli.scoring import parse_label_map
from howsure.core.task import load_task
from howsure.errors import StoreError
from howsure.service.drift import drift_report

EXIT_ALARM = 1

policy_app = typer.Typer(name="policy", help="Stored policy versions: list them, roll back.",
                         no_args_is_help=True)
app.add_typer(policy_app, name="policy")

DB_HELP = "The review store: a SQLite file path, sqlite:/// or postgresql:// URL."


def _actor(given: str | None) -> str:
    """Who runs the command, for the audit log: --actor, else the login name."""
    if given:
        return given
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in a bare container
        return "cli"


@contextmanager
def _open(db: str) -> Iterator[Any]:
    # Local for weight: the store loads sqlalchemy, which the CLI's other commands need not.
    from howsure.service.db import require_existing
    from howsure.service.store import ReviewStore

    store = ReviewStore(require_existing(db))
    try:
        yield store
    finally:
        store.close()


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _threshold(body: dict[str, Any], digits: int = 4) -> str:
    """The threshold(s) of a stored policy body, for people: '0.7844', 'negative -, positive 0.99'."""
    if body.get("rule") == "per_class":
        parts = [f"{label} {'-' if t is None else f'{t:.{digits}g}'}"
                 for label, t in (body.get("class_thresholds") or {}).items()]
        return ", ".join(parts)
    value = body.get("threshold")
    return "none" if value is None else f"{value:.{digits}g}"


def _split_line(counts: dict[str, int]) -> str:
    return f"{counts['n']} items ({counts['review']} review, {counts['audit']} audit)"


@command("recalibrate")
def recalibrate_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    calibrator: str = typer.Option(
        "auto", "--fit-calibrator", "--calibrator",
        help="Calibrator to fit on the reviewed items outside the certification share (auto chooses by "
             "cross-validated log loss), or none. --calibrator is the older name.",
    ),
    target: Optional[float] = typer.Option(None, help="Accuracy the automated items must reach (default: the active policy's)."),
    delta: Optional[float] = typer.Option(None, help="Chance the guarantee may fail (default: the active policy's)."),
    audit_rate: Optional[float] = typer.Option(None, "--audit-rate", help="Audit rate the service ran with, for items stored without their own (older stores; default: estimated from them). Recorded rates are always used."),
    certify_share: Optional[float] = typer.Option(None, "--certify-share", help="Share of all items that certifies (at most the audit rate; default: the audit rate)."),
    seed: int = typer.Option(0, help="Salt of the fit/certify draw and seed of auto's folds."),
    versions: Optional[List[int]] = typer.Option(None, "--policy-version", help="Learn only from items these versions decided (repeat the option; default: every version of the same model)."),
    activate: bool = typer.Option(True, "--activate/--no-activate", help="Make the new version the active one."),
    actor: Optional[str] = typer.Option(None, help="Name kept in the audit log (default: your login name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    allow_overlap: bool = typer.Option(
        False, "--allow-overlap", help="Fit and certify even on items the active policy's adapter trained on "
                                       "(refused otherwise); the new policy says so in its overlap field."),
) -> None:
    """Refit the calibrator and re-certify the threshold from reviews: a new policy version.

    Certifies on an equal-chance share of all items (every audited item drawn at the lowest
    audit rate, the others at lowest / their own rate, review items at the lowest rate) and
    fits the calibrator on the other reviewed items.
    """
    from howsure.service.feedback import recalibrate

    with _open(db) as store:
        record, report = recalibrate(
            store, actor=_actor(actor), calibrator=calibrator, target_accuracy=target, delta=delta,
            seed=seed, audit_rate=audit_rate, certify_share=certify_share, activate=activate,
            policy_versions=versions or None, allow_overlap=allow_overlap,
        )
        previous = store.get_policy(report["previous_version"])
    if as_json:
        console.print_json(json.dumps(report, default=str))
        return
    versions = ", ".join(str(v) for v in report["versions_pooled"])
    chosen = f" -> {report['calibrator_chosen']}" if report.get("calibrator_chosen") else ""
    rate = "none" if report["audit_rate"] is None else f"{report['audit_rate']:.3g}"
    console.print(f"[bold]{report['n_reviewed']}[/] reviewed items of policy version(s) {versions}", highlight=False)
    console.print(f"  calibrator {report['calibrator']}{chosen} fitted on {_split_line(report['fit'])}",
                  highlight=False)
    console.print(
        f"  threshold certified on {_split_line(report['certify'])}: every item had the same "
        f"chance {report['certify_share']:.3g} to be drawn", highlight=False,
    )
    drawn = report.get("audit_rates") or {}
    if len(drawn) > 1:  # audited at several rates: each item weighted by its own
        rate += " lowest; audited items per rate: " + ", ".join(f"{r}: {n}" for r, n in drawn.items())
    console.print(f"  audit rate {rate} ({escape(report['audit_rate_source'])})", highlight=False)
    body = record.body
    if body["rule"] == "top_label":
        console.print(certificate_line(body["guarantee"]), highlight=False)
    else:
        for label, cert in body["guarantee"]["classes"].items():
            console.print(f"[bold]{escape(label)}[/]: " + (certificate_line(cert) if cert else "never predicted"),
                          highlight=False)
    state = "is now active" if record.active else "is stored, not active (howsure policy rollback --to it)"
    console.print(
        f"policy version {record.version} ({escape(record.policy_id)}) {state}; version "
        f"{previous.version} had threshold {escape(_threshold(previous.body, 6))}", highlight=False,
    )
    for warning in report["warnings"]:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)


@command("list", group=policy_app)
def policy_list(db: str = typer.Option(..., "--db", help=DB_HELP)) -> None:
    """Every stored policy version, newest first; * marks the active one."""
    with _open(db) as store:
        history = store.policy_history()
    if not history:
        console.print("no policy stored yet (howsure serve --policy adds one)")
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title_justify="left")
    # The adapter column only where some version scores through one: without it the table fits
    # an 80-column terminal.
    with_adapter = any(record.body.get("adapter") for record in history)
    for name in ("version", "policy_id", "created", "by", "threshold", "target", "calibrator") + (
            ("adapter",) if with_adapter else ()):
        table.add_column(name, no_wrap=True, justify="right" if name in ("version", "threshold", "target") else "left")
    for record in history:
        body = record.body
        guarantee = body.get("guarantee", {})
        calibrator = body.get("calibrator") or {}
        name = calibrator.get("name", "none")
        if name == "auto":
            name = f"auto ({(calibrator.get('state') or {}).get('chosen', '?')})"
        target = guarantee.get("target_accuracy")
        adapter = body.get("adapter") or {}  # the LoRA adapter the policy scores through (howsure finetune)
        cells = [
            f"{'*' if record.active else ''}{record.version}", escape(record.policy_id),
            record.created_at.strftime("%Y-%m-%d %H:%M"), escape(record.created_by), escape(_threshold(body)),
            "-" if target is None else f"{target:.0%} @{1 - guarantee.get('delta', 0):.0%}", escape(str(name)),
        ]
        table.add_row(*cells, *([escape(adapter.get("directory", "-"))] if with_adapter else []),
                      style="bold" if record.active else None)
    console.print(table)
    # Notes are sentences; under the table they wrap at the terminal instead of squeezing it.
    for record in history:
        if record.note:
            console.print(f"{record.version}: {escape(record.note)}", highlight=False)


def previous_active_version(store: Any) -> int:
    """The version that was active before the active one became active (the activation log's
    ``previous_version``): what ``policy rollback`` returns to. Like ``kubectl rollout undo``,
    rolling back twice returns to where it started; ``--to`` goes further back."""
    active = store.active_policy()
    if active is None:
        raise StoreError("no policy is active, so there is nothing to roll back from; give --to VERSION")
    for event in store.events(action="policy_activated", limit=None):
        if event.policy_version == active.version:
            previous = event.detail.get("previous_version")
            if previous is None:
                raise StoreError(f"version {active.version} was the first active policy; nothing to roll back "
                                 "to (give --to VERSION to activate another one)")
            return int(previous)
    # No activation logged (a store filled by other means): fall back to the next older version.
    older = [r.version for r in store.policy_history() if r.version < active.version]
    if not older:
        raise StoreError(f"version {active.version} is the oldest stored policy; nothing to roll back to")
    return max(older)


@command("rollback", group=policy_app)
def policy_rollback(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    to: Optional[int] = typer.Option(None, "--to", help="Version to activate (default: the one active before the active one)."),
    actor: Optional[str] = typer.Option(None, help="Name kept in the audit log (default: your login name)."),
) -> None:
    """Activate the policy version that was active before the current one (any with --to)."""
    with _open(db) as store:
        active = store.active_policy()
        record = store.activate_policy(previous_active_version(store) if to is None else to, actor=_actor(actor))
    if active is not None and active.version == record.version:
        console.print(f"policy version {record.version} ({escape(record.policy_id)}) is already active; nothing changed",
                      highlight=False)
        return
    was = "none" if active is None else active.version
    console.print(f"policy version {record.version} ({escape(record.policy_id)}) is active (was {was})", highlight=False)


@command("drift")
def drift_command(
    db: str = typer.Option(..., "--db", help=DB_HELP),
    version: Optional[int] = typer.Option(None, "--policy-version", help="Policy version whose items to check (default: the active one)."),
    window: int = typer.Option(1000, help="Newest items compared with the reference."),
    psi_alarm: float = typer.Option(0.2, "--psi-alarm", help="Alarm when the PSI reaches this."),
    ks_alpha: float = typer.Option(0.01, "--ks-alpha", help="Alarm when the KS p-value falls below this."),
    min_live: int = typer.Option(100, "--min-live", help="Fewer live items than this: no check."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Compare live confidences with the certified ones (PSI, KS; no labels); exit 1 on alarm."""

    with _open(db) as store:
        report = drift_report(store, policy_version=version, window=window, psi_alarm=psi_alarm,
                              ks_alpha=ks_alpha, min_live=min_live)
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
    else:
        style = "bold red" if report.alarm else "green" if report.psi is not None else "yellow"
        console.print(f"[{style}]{escape(report.message)}[/]", highlight=False, soft_wrap=True)
        if report.suggestion:
            console.print(f"suggestion: {escape(report.suggestion)}", highlight=False, soft_wrap=True)
    if report.alarm:
        raise typer.Exit(EXIT_ALARM)


EXPORT_HELP = "jsonl, csv or openai-chat (default: from the file suffix; openai-chat is the chat fine-tuning JSONL)."


@command("export")
def export_command(
    output: Path = typer.Option(..., "--output", help="File to write (.jsonl or .csv)."),
    db: Optional[str] = typer.Option(None, "--db", help=DB_HELP + " Either this or --input."),
    input: Optional[Path] = typer.Option(None, "--input", help="A labelled file (CSV, TSV, JSONL, JSON, Parquet) to "
                                         "export instead of the database (openai-chat only; needs --task)."),
    format: Optional[str] = typer.Option(None, "--format", help=EXPORT_HELP),
    version: Optional[int] = typer.Option(None, "--policy-version", help="Only items decided by this policy version."),
    task: Optional[str] = typer.Option(None, "--task", help="Task whose prompt the chat lines carry (--input only; "
                                       "from the database, each item's policy task)."),
    text_column: str = typer.Option("text", help="Column of --input holding the texts."),
    label_column: str = typer.Option("label", help="Column of --input holding the labels."),
    label_map: Optional[List[str]] = typer.Option(None, "--label-map", help="RAW=LABEL for --input, repeatable."),
    include_audited: Optional[bool] = typer.Option(
        None, "--include-audited/--exclude-audited",
        help="Export the audited items (the random sample the guarantee is certified on). Default: excluded from "
             "openai-chat (a training file: training on them would spoil the next certificate), included in "
             "jsonl/csv (their source column says audit)."),
) -> None:
    """Write reviewed items as a labelled data set (JSONL, CSV, or openai-chat) for fine-tuning.

    jsonl/csv columns: item_id, text, label (the reviewer's), source (review or audit), reviewer,
    policy_version, prediction, reviewed_at. openai-chat: one {"messages": [system, user (the
    task's prompt with the text), assistant (the label)]} line per item.
    """
    from howsure.service.feedback import export_labelled
    from howsure.service.training_data import ChatRow, store_chat_rows, write_chat_jsonl

    if (db is None) == (input is None):
        raise typer.BadParameter("give exactly one of --db and --input", param_hint="--db/--input")
    if format is None and input is not None:
        format = "openai-chat"
    if input is not None:
        if format != "openai-chat":
            raise typer.BadParameter(f"--input exports only as openai-chat, not {format!r}", param_hint="--format")
        if task is None:
            raise typer.BadParameter("--input needs --task: the chat lines carry the task's prompt", param_hint="--task")
        from howsure.finetune.data import read_labelled_file

        the_task = load_task(task)
        data = read_labelled_file(input, the_task, text_column, label_column, parse_label_map(label_map))
        n = write_chat_jsonl((ChatRow(the_task, t, l) for t, l in zip(data.texts, data.labels)), output)
        console.print(f"{n} labelled items written to {escape(str(output))} as openai-chat", highlight=False)
        return
    with _open(db) as store:
        if format == "openai-chat":
            n = write_chat_jsonl(store_chat_rows(store, policy_version=version,
                                                 include_audited=bool(include_audited)), output)
        else:
            n = export_labelled(store, output, format, policy_version=version,
                                include_audited=True if include_audited is None else include_audited)
    # The jsonl/csv line is the one it always was; the chat file says whether audited items are in.
    note = "" if format != "openai-chat" else (
        " as openai-chat, audited items included" if include_audited else " as openai-chat, audited items excluded")
    console.print(f"{n} reviewed items written to {escape(str(output))}{note}", highlight=False)
