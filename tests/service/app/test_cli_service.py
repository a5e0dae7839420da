"""`howsure users`, `howsure tokens` and how `howsure serve` installs its policy file, through
typer's runner on a SQLite file (the server itself runs in test_crash.py and test_browser.py)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.cli.service import install_policy
from howsure.service.store import ReviewStore

runner = CliRunner()


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "reviews.db")


def run(*args: str):
    return runner.invoke(app, list(args))


def test_users_and_tokens(db):
    assert run("users", "add", "ann", "--role", "admin", "--db", db).exit_code == 0
    result = run("users", "add", "rita", "--db", db)
    assert result.exit_code == 0 and "added user rita (reviewer)" in result.stdout
    duplicate = run("users", "add", "rita", "--db", db)
    assert duplicate.exit_code == 2 and "user 'rita' already exists" in duplicate.output
    bad_role = run("users", "add", "zed", "--role", "boss", "--db", db)
    assert bad_role.exit_code == 2 and "unknown role 'boss'" in bad_role.output

    created = run("tokens", "create", "rita", "--db", db, "--note", "laptop")
    assert created.exit_code == 0
    token = created.stdout.strip().splitlines()[0]
    assert token.startswith("hs_") and len(token) > 40
    with ReviewStore(db) as store:
        assert store.authenticate(token).name == "rita"
        stored = store.list_tokens("rita")[0]
    listing = run("tokens", "list", "--db", db)
    assert stored.hash_prefix in listing.stdout and token not in listing.stdout and "laptop" in listing.stdout
    assert "rita" in run("users", "list", "--db", db).stdout
    assert run("tokens", "create", "nobody", "--db", db).exit_code == 2

    revoked = run("tokens", "revoke", stored.hash_prefix, "--db", db)
    assert revoked.exit_code == 0 and f"revoked token {stored.id} of rita" in revoked.stdout
    with ReviewStore(db) as store:
        assert store.authenticate(token) is None


@pytest.mark.parametrize("name", ["[/bad]", "[bold]x[/bold]", "a[b"])
def test_user_values_are_printed_as_typed_not_as_markup(db, name):
    """A name that looks like rich markup neither crashes `users add` nor any later listing,
    and is shown exactly as typed (also inside an error message)."""
    added = run("users", "add", name, "--db", db)
    assert added.exit_code == 0, added.output
    assert f"added user {name} (reviewer)" in added.stdout
    assert run("tokens", "create", name, "--db", db, "--note", "[red]note[/red]").exit_code == 0
    wide = {"COLUMNS": "200"}  # the tables must not wrap the values this test looks for
    for listing in (runner.invoke(app, ["users", "list", "--db", db], env=wide),
                    runner.invoke(app, ["tokens", "list", "--db", db], env=wide)):
        assert listing.exit_code == 0, listing.output
        assert name in listing.stdout
    assert "[red]note[/red]" in runner.invoke(app, ["tokens", "list", "--db", db], env=wide).stdout
    duplicate = run("users", "add", name, "--db", db)
    assert duplicate.exit_code == 2 and f"user {name!r} already exists" in duplicate.output


def test_serve_stores_a_new_policy_once_and_never_undoes_a_newer_version(db, tmp_path, policy_dict_factory):
    first = tmp_path / "first.json"
    first.write_text(json.dumps(policy_dict_factory(threshold=0.9)))
    with ReviewStore(db) as store:
        record, what = install_policy(store, first, "test")
        assert record.version == 1 and "stored as version 1 (active)" in what
        record, what = install_policy(store, first, "test")
        assert record.version == 1 and "is the active version 1" in what
        assert len(store.policy_history()) == 1
        # A recalibration (or rollback) made another version active: restarting with the
        # old file keeps it.
        newer = store.add_policy(policy_dict_factory(threshold=0.95), actor="recalibrate")
        record, what = install_policy(store, first, "test")
        assert record.version == newer.version and "stays so" in what and "rollback --to 1" in what
        assert len(store.policy_history()) == 2
        record, what = install_policy(store, None, "test")
        assert record.version == newer.version


def test_serve_refuses_without_any_policy(db):
    result = run("serve", "--db", db)
    assert result.exit_code == 2 and "pass --policy FILE" in result.output
    missing = run("serve", "--db", db, "--policy", "nope.json")
    assert missing.exit_code == 2 and "'nope.json' does not exist" in missing.output


def test_serve_hands_its_limits_and_the_docs_switch_to_the_app(db, tmp_path, policy_dict_factory, monkeypatch):
    """The admission limits and /docs are set from the command line, not only from Python."""
    import uvicorn

    import howsure.backends
    import howsure.service.app

    built: list[dict] = []
    monkeypatch.setattr(howsure.backends, "load_backend", lambda *args, **kwargs: object())
    monkeypatch.setattr(howsure.service.app, "create_app", lambda store, backend, **kwargs: built.append(kwargs))
    monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(policy_dict_factory(threshold=0.9)))
    result = run("serve", "--db", db, "--policy", str(policy), "--max-text-tokens", "100",
                 "--max-request-tokens", "400", "--max-client-tokens", "800", "--max-queue-tokens", "1600",
                 "--api-docs")
    assert result.exit_code == 0, result.output
    [kwargs] = built
    assert (kwargs["max_text_tokens"], kwargs["max_request_tokens"], kwargs["max_client_tokens"],
            kwargs["max_queue_tokens"], kwargs["api_docs"]) == (100, 400, 800, 1600, True)
    assert "/docs" in result.output
    built.clear()
    assert run("serve", "--db", db).exit_code == 0 and built[0]["api_docs"] is False
