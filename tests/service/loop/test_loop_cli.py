"""howsure recalibrate / policy list / policy rollback / drift / export, driven through typer's
CliRunner on a real database file (SQLite) and a PostgreSQL database."""

from __future__ import annotations

import json
import sys

import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.service.store import ReviewStore
from loop_sim import loop_policy_dict, review, serve

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def flat(text: str) -> str:
    """Rich wraps long lines at 80 columns under the runner; compare with the wrapping undone."""
    return " ".join(text.split())


@pytest.fixture
def served_db(db_url, loop_policy):
    """A store with version 1, 300 served items (audit rate 0.5), every queue item reviewed."""
    with ReviewStore(db_url) as store:
        record = store.add_policy(loop_policy, actor="admin", note="first")
        review(store, serve(store, record, 300, audit_rate=0.5))
    return db_url


def test_recalibrate_list_roll_back_and_export(served_db, tmp_path):
    # A trial version first: stored, not active, its report as JSON.
    trial = invoke("recalibrate", "--db", served_db, "--calibrator", "platt", "--no-activate", "--json",
                   "--target", 0.9, "--delta", 0.1, "--policy-version", 1)
    assert trial.exit_code == 0, trial.output
    report = json.loads(trial.stdout)
    assert report["version"] == 2 and report["active"] is False and report["target_accuracy"] == 0.9
    assert report["versions_pooled"] == [1]
    assert report["fit"]["n"] + report["certify"]["n"] == report["n_reviewed"]

    result = invoke("recalibrate", "--db", served_db, "--fit-calibrator", "platt", "--actor", "ops")
    assert result.exit_code == 0, result.output
    out = flat(result.stdout)
    assert f"{report['n_reviewed']} reviewed items of policy version(s) 1" in out
    assert f"calibrator platt fitted on {report['fit']['n']} items ({report['fit']['review']} review, 0 audit)" in out
    assert f"threshold certified on {report['certify']['n']} items" in out
    assert "estimated from the store" in out
    assert "certified: confidence >=" in out and "policy version 3 (" in out and "is now active" in out

    listing = invoke("policy", "list", "--db", served_db)
    assert listing.exit_code == 0, listing.output
    firsts = [line.split()[0] for line in listing.stdout.splitlines() if line.split() and line.split()[0] in ("*3", "3", "2", "*1", "1")]
    assert firsts == ["*3", "2", "1"]
    assert "platt" in listing.stdout and "ops" in listing.stdout and "first" in listing.stdout

    # Rollback returns to the version active before (1, not the never-active trial 2) ...
    rollback = invoke("policy", "rollback", "--db", served_db, "--actor", "ops")
    assert rollback.exit_code == 0, rollback.output
    assert flat(rollback.stdout).startswith("policy version 1 (") and "is active (was 3)" in flat(rollback.stdout)
    with ReviewStore(served_db) as store:
        assert store.active_policy().version == 1
        [event] = store.events(action="policy_activated", limit=1)
        assert event.actor == "ops" and event.detail["previous_version"] == 3
    # ... twice undoes it; --to goes anywhere; unknown versions are one clear line, exit 2.
    assert "is active (was 1)" in flat(invoke("policy", "rollback", "--db", served_db).stdout)
    assert "policy version 2 (" in flat(invoke("policy", "rollback", "--db", served_db, "--to", 2).stdout)
    assert "is already active; nothing changed" in flat(invoke("policy", "rollback", "--db", served_db, "--to", 2).stdout)
    missing = invoke("policy", "rollback", "--db", served_db, "--to", 7)
    assert missing.exit_code == 2 and "policy version 7 is not in the store" in flat(missing.stderr)

    out_file = tmp_path / "reviewed.jsonl"
    exported = invoke("export", "--db", served_db, "--output", out_file)
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert len(rows) == report["n_reviewed"] and flat(exported.stdout) == f"{len(rows)} reviewed items written to {out_file}"
    assert set(rows[0]) >= {"text", "label", "source", "reviewer", "policy_version"}
    csv_file = tmp_path / "reviewed.data"
    assert invoke("export", "--db", served_db, "--output", csv_file, "--format", "csv").exit_code == 0
    assert csv_file.read_text().splitlines()[0] == "item_id,text,label,source,reviewer,policy_version,prediction,reviewed_at"
    none = invoke("export", "--db", served_db, "--output", tmp_path / "v2.jsonl", "--policy-version", 2)
    assert none.exit_code == 0 and flat(none.stdout).startswith("0 reviewed items")


def test_rollback_needs_a_version_that_was_active_before(db_url, loop_policy):
    nothing = invoke("policy", "rollback", "--db", db_url)
    assert nothing.exit_code == 2 and "no policy is active, so there is nothing to roll back from" in flat(nothing.stderr)
    with ReviewStore(db_url) as store:
        store.add_policy(loop_policy, actor="admin")
    first = invoke("policy", "rollback", "--db", db_url)
    assert first.exit_code == 2 and "version 1 was the first active policy; nothing to roll back to" in flat(first.stderr)


def test_recalibrate_errors_are_one_line_with_exit_2(db_url):
    result = invoke("recalibrate", "--db", db_url)
    assert result.exit_code == 2
    assert flat(result.stderr) == "error: the store has no active policy to recalibrate; add one first (howsure serve --policy)"
    bad = invoke("recalibrate", "--db", "mysql://somewhere/db")
    assert bad.exit_code == 2 and "error:" in bad.stderr and "mysql://somewhere/db" in bad.stderr


def test_drift_exits_0_when_quiet_and_1_on_alarm(db_url, loop_policy):
    with ReviewStore(db_url) as store:
        record = store.add_policy(loop_policy, actor="admin")
        few = invoke("drift", "--db", db_url)
        assert few.exit_code == 0 and "only 0 live item(s) of policy version 1" in flat(few.stdout)
        serve(store, record, 400, audit_rate=0.0, seed=5)
        quiet = invoke("drift", "--db", db_url)
        assert quiet.exit_code == 0, quiet.output
        assert flat(quiet.stdout).startswith("no drift: the last 400 live confidences of policy version 1")
        serve(store, record, 300, audit_rate=0.0, seed=6, mean_margin=1.0)
    alarm = invoke("drift", "--db", db_url, "--window", 300)
    assert alarm.exit_code == 1
    assert flat(alarm.stdout).startswith("drift: the last 300 live confidences") and "suggestion: " in alarm.stdout
    as_json = invoke("drift", "--db", db_url, "--window", 300, "--json")
    assert as_json.exit_code == 1
    data = json.loads(as_json.stdout)
    assert data["alarm"] is True and data["n_live"] == 300 and data["psi"] > 0.2 and data["ks_p_value"] < 0.01
    bad = invoke("drift", "--db", db_url, "--ks-alpha", 2)
    assert bad.exit_code == 2 and "ks_alpha must be a number in (0, 1), got 2.0" in flat(bad.stderr)


def test_policy_list_on_an_empty_store(db_url):
    result = invoke("policy", "list", "--db", db_url)
    assert result.exit_code == 0 and "no policy stored yet" in result.stdout


def test_a_mistyped_sqlite_path_creates_nothing_and_keeps_the_output(tmp_path):
    kept = tmp_path / "keep.csv"
    kept.write_text("text,label\nold row,positive\n", "utf-8")
    missing = tmp_path / "typo.sqlite"
    for args in (("export", "--db", missing, "--output", kept, "--format", "csv"), ("policy", "list", "--db", missing),
                 ("recalibrate", "--db", missing), ("drift", "--db", missing)):
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert flat(result.stderr) == (f"error: no review database at {str(missing)!r} (from --db {str(missing)!r}); "
                                       "check the path (`howsure serve --db` creates one)")
    assert not missing.exists()
    assert kept.read_text("utf-8") == "text,label\nold row,positive\n"


def test_the_loop_commands_do_not_import_torch(tmp_path):
    import subprocess

    (tmp_path / "x.db").touch()  # an empty SQLite database
    code = ("import sys; from typer.testing import CliRunner; from howsure.cli import app; "
            f"r = CliRunner().invoke(app, ['policy', 'list', '--db', {str(tmp_path / 'x.db')!r}]); "
            "assert r.exit_code == 0, r.output; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
