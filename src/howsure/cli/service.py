"""Service commands: serve, users, tokens.

    howsure users add alice --role reviewer --db reviews.db
    howsure tokens create alice --db reviews.db          # prints the token once
    howsure serve --policy policy.json --db reviews.db   # http://127.0.0.1:8000/review
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table
from rich.markup import escape

from howsure.cli.app import app, command, console, err_console, fail
from howsure.cli.scoring import DeviceOption, open_backend
from howsure.decisions.policy import Policy, adapter_checksum
from howsure.models import DEFAULT_MODEL
from howsure.service import auth
from howsure.service.admission import MAX_BATCH_TOKENS
from howsure.service.hardening import exposure_warning

users_app = typer.Typer(help="Users of the review service (admin, reviewer, client).", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: created once, stored hashed, revocable.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")

DbOption = typer.Option(..., "--db", help="Database: a SQLite file (reviews.db), sqlite:/// or postgresql:// URL.")


def cli_actor() -> str:
    """Who the audit log names for a CLI action: ``cli:<login name>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no login name in some containers
        return "cli"


def open_store(db: str):
    # Local for weight: the store loads sqlalchemy, which commands other than these need not.
    from howsure.service.store import ReviewStore

    return ReviewStore(db)


def install_policy(store, policy_path: Optional[Path], actor: str) -> tuple[object, str]:
    """Make sure the store has an active policy; returns (active record, what happened).

    A policy file whose content (policy_id) is not stored yet becomes a new active version. One
    that is stored already changes nothing: after a recalibration or a rollback the store's
    active version wins, so restarting the service never undoes them.
    """

    active = store.active_policy()
    if policy_path is None:
        if active is None:
            raise fail("the database has no policy yet; pass --policy FILE (a policy made by `howsure thresholds`)")
        return active, f"serving the active policy, version {active.version}"
    policy = Policy.load(policy_path)
    if active is not None and active.policy_id == policy.policy_id:
        return active, f"policy {policy.policy_id} is the active version {active.version}"
    stored = [record for record in store.policy_history() if record.policy_id == policy.policy_id]
    if stored and active is None:
        record = store.activate_policy(stored[0].version, actor=actor)
        return record, f"policy {policy.policy_id} is stored as version {record.version}; activated it"
    if stored:
        return active, (
            f"policy {policy.policy_id} from {policy_path} is stored as version {stored[0].version}, but version "
            f"{active.version} is active and stays so (roll back with `howsure policy rollback --to "
            f"{stored[0].version}`)"
        )
    record = store.add_policy(policy.to_dict(), actor=actor, note=f"from {policy_path}")
    return record, f"policy {policy.policy_id} from {policy_path} stored as version {record.version} (active)"


@command("serve")
def serve(
    db: str = DbOption,
    policy: Optional[Path] = typer.Option(None, "--policy", "-p",
                                          help="Policy JSON; stored as a new active version if it is new."),
    model: Optional[str] = typer.Option(None, "--model", "-m",
                                        help="Preset, model directory, .gguf or hub id (default: the policy's model)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on."),
    port: int = typer.Option(8000, help="Port to listen on."),
    audit_rate: float = typer.Option(0.05, "--audit-rate", help="Share of auto items also queued for an audit."),
    threads: Optional[int] = typer.Option(None, "--threads", help="torch threads (default: torch's choice)."),
    dtype: str = typer.Option("float32", "--dtype", help="float32, mixed or bfloat16."),
    device: str = DeviceOption,
    max_batch: int = typer.Option(32, "--max-batch", help="Most texts per micro-batch."),
    batch_tokens: int = typer.Option(
        MAX_BATCH_TOKENS, "--batch-tokens",
        help="Most padded tokens per forward pass (as many as a micro-batch holds): within it the backend "
             "splits a batch of short and long texts into passes of similar lengths where that costs less."),
    max_wait_ms: float = typer.Option(10.0, "--max-wait-ms", help="Longest a text waits for a batch to fill."),
    lease_seconds: float = typer.Option(300.0, "--lease-seconds", help="How long a reviewer holds an item."),
    secure_cookies: bool = typer.Option(False, "--secure-cookies", help="Session cookie only over HTTPS."),
    session_secret_file: Optional[Path] = typer.Option(
        None, "--session-secret-file",
        help="File holding the review pages' session key, made on first use (default: session-secret in "
             "the user config dir). HOWSURE_SESSION_SECRET, when set, is used instead."),
    max_text_tokens: int = typer.Option(
        1024, "--max-text-tokens", help="Most tokens of one text (the model's tokenizer, the text alone); a longer "
                                        "one is refused with 422, never truncated."),
    max_request_tokens: int = typer.Option(8192, "--max-request-tokens",
                                           help="Most tokens of one request's texts together (413 above)."),
    max_client_tokens: int = typer.Option(16384, "--max-client-tokens",
                                          help="Most tokens one client may have waiting or scoring (429 above)."),
    max_queue_tokens: int = typer.Option(65536, "--max-queue-tokens",
                                         help="Most tokens waiting or scoring for all clients (429 above)."),
    api_docs: bool = typer.Option(False, "--api-docs",
                                  help="Serve /docs and /redoc (they load their script from a CDN)."),
    log_level: str = typer.Option("info", "--log-level", help="uvicorn log level."),
    adapter: Optional[Path] = typer.Option(
        None, "--adapter",
        help="LoRA adapter directory (howsure finetune) to score with, loaded now; the served policy must "
             "record this adapter (its weights' checksum), as its certificate holds only for those scores."),
) -> None:
    """Run the review service: the JSON API under /v1, the review page at /review.

    Review-page sessions are signed with HOWSURE_SESSION_SECRET when it is set (give every machine serving one database the same), else with a key kept in --session-secret-file, so a restart keeps reviewers signed in.
    """
    # Local for weight: uvicorn and the app (fastapi) load only when the service runs; the
    # app is read off its module so a test can patch howsure.service.app.create_app.
    import uvicorn

    from howsure.service.app import create_app

    store = open_store(db)
    record, what = install_policy(store, policy, cli_actor())
    err_console.print(escape(what), highlight=False, soft_wrap=True)
    if not any(user.role == "admin" and not user.disabled for user in store.list_users()):
        err_console.print("[yellow]note:[/] no admin user yet: `howsure users add NAME --role admin --db ...` "
                          "and `howsure tokens create NAME --db ...`", highlight=False, soft_wrap=True)
    if os.environ.get(auth.SECRET_ENV):
        secret = None  # the signer reads it
    else:
        secret_path = session_secret_file or auth.default_secret_path()
        secret = auth.load_or_create_secret(secret_path)
        err_console.print(f"review-page sessions are signed with the key in {escape(str(secret_path))}", highlight=False,
                          soft_wrap=True)
    model_name = model or record.body.get("model_id") or DEFAULT_MODEL
    if adapter is not None:
        recorded = (record.body.get("adapter") or {}).get("checksum")
        if recorded != adapter_checksum(adapter):
            raise fail(f"--adapter {adapter} is not the adapter policy version {record.version} was certified "
                       f"with ({'the base model, no adapter' if recorded is None else 'checksum ' + recorded[:12]}); "
                       "serve that policy's own adapter, or certify a policy on this adapter's scores")
    backend = open_backend(model_name, dtype, threads, batch_size=max_batch, device=device, batch_tokens=batch_tokens,
                           adapter=None if adapter is None else str(adapter))

    def adapter_backend(adapter_model: str, adapter_dir: str | None):
        # A policy from `howsure finetune --db` scores through its own adapter, loaded like the base
        # (the --adapter one is loaded already).
        if adapter is not None and adapter_model == model_name and adapter_dir is not None \
                and Path(adapter_dir).resolve() == adapter.resolve():
            return backend
        return open_backend(adapter_model, dtype, threads, batch_size=max_batch, device=device,
                            batch_tokens=batch_tokens, adapter=adapter_dir)

    service_app = create_app(store, backend, backend_factory=adapter_backend, model=model_name, audit_rate=audit_rate, max_batch=max_batch, max_wait_ms=max_wait_ms,
                             lease_seconds=lease_seconds, secure_cookies=secure_cookies, session_secret=secret,
                             max_text_tokens=max_text_tokens, max_request_tokens=max_request_tokens,
                             max_client_tokens=max_client_tokens, max_queue_tokens=max_queue_tokens,
                             api_docs=api_docs)
    docs = f"   API docs: http://{host}:{port}/docs" if api_docs else ""
    err_console.print(escape(f"review page: http://{host}:{port}/review   API schema: http://{host}:{port}/openapi.json{docs}"),
                      highlight=False, soft_wrap=True)
    if warning := exposure_warning(host, secure_cookies):
        err_console.print(warning, markup=False, highlight=False, soft_wrap=True)
    try:
        uvicorn.run(service_app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=10)
    finally:
        store.close()


@command("add", group=users_app)
def users_add(
    name: str = typer.Argument(..., help="User name (also the reviewer name in the audit log)."),
    role: str = typer.Option("reviewer", "--role", "-r", help="admin, reviewer or client."),
    db: str = DbOption,
) -> None:
    """Add a user; then give them a token with `howsure tokens create NAME`."""
    with open_store(db) as store:
        user = store.add_user(name, role, actor=cli_actor())
    console.print(f"added user {escape(user.name)} ({user.role})", highlight=False, soft_wrap=True)


@command("list", group=users_app)
def users_list(db: str = DbOption) -> None:
    """List the users and their roles."""
    with open_store(db) as store:
        users = store.list_users()
        tokens = store.list_tokens()
    table = Table()
    for column in ("user", "role", "active tokens", "disabled"):
        table.add_column(column)
    for user in users:
        active = sum(1 for t in tokens if t.user_name == user.name and t.revoked_at is None)
        table.add_row(escape(user.name), user.role, str(active), "yes" if user.disabled else "")
    console.print(table)


@command("create", group=tokens_app)
def tokens_create(
    name: str = typer.Argument(..., help="The user the token belongs to."),
    db: str = DbOption,
    note: str = typer.Option("", "--note", help="What the token is for (kept with it)."),
) -> None:
    """Create a token for a user and print it. It is shown only this once (stored hashed)."""
    with open_store(db) as store:
        token = store.create_token(name, actor=cli_actor(), note=note)
    typer.echo(token)  # plain stdout, so `TOKEN=$(howsure tokens create ...)` works
    err_console.print(f"token for {escape(name)}: shown once, stored only as its sha256; revoke with "
                      f"`howsure tokens revoke`", highlight=False, soft_wrap=True)


@command("list", group=tokens_app)
def tokens_list(db: str = DbOption, user: Optional[str] = typer.Option(None, "--user", help="Only this user's.")) -> None:
    """List tokens (id, user, hash prefix, last use); never the tokens themselves."""
    with open_store(db) as store:
        tokens = store.list_tokens(user)
    table = Table()
    for column in ("id", "user", "hash prefix", "note", "created", "last used", "revoked"):
        table.add_column(column)
    for t in tokens:
        stamp = lambda value: value.strftime("%Y-%m-%d %H:%M") if value else ""  # noqa: E731
        table.add_row(str(t.id), escape(t.user_name), t.hash_prefix, escape(t.note), stamp(t.created_at), stamp(t.last_used_at),
                      stamp(t.revoked_at))
    console.print(table)


@command("revoke", group=tokens_app)
def tokens_revoke(
    token: str = typer.Argument(..., help="Token id, the token itself, or 8+ hex digits of its hash."),
    db: str = DbOption,
) -> None:
    """Revoke a token: it stops working at once."""
    with open_store(db) as store:
        record = store.revoke_token(token, actor=cli_actor())
    console.print(f"revoked token {record.id} of {escape(record.user_name)}", highlight=False, soft_wrap=True)
