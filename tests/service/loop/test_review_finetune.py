"""The review loop closed: reviewed items exported as chat fine-tuning JSONL, a fine-tune on them
that never sees the audited or certification items, the result served as a new model version
with its own policy, rollback to the previous model, and recalibration's overlap guard."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.core.task import Task
from howsure.service.store import NewItem, ReviewStore
from howsure.service.training_data import chat_messages
from loop_sim import review, serve

runner = CliRunner()


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def reviewed_db(db_url, loop_policy):
    """Version 1, 300 served items (audit rate 0.5, recorded), every queued item reviewed; one
    review-routed text holds a quote, a newline and a tab to be escaped."""
    with ReviewStore(db_url) as store:
        record = store.add_policy(loop_policy, actor="admin", note="first")
        served = serve(store, record, 300, audit_rate=0.5, record_rate=True)
        tricky = store.add_items([NewItem(
            text='he said "fine"\nthen\tleft', prediction="negative", confidence=0.55,
            probabilities={"negative": 0.55, "positive": 0.45}, raw_probabilities={"negative": 0.55, "positive": 0.45},
            decision="review", queue_reason="review", policy_version=record.version, policy_id=record.policy_id)],
            actor="client")
        served.truth[tricky[0].id] = "positive"
        review(store, served)
        labelled = store.labelled_items()
    return db_url, labelled


def chat_lines(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_openai_chat_export_from_the_database(reviewed_db, tmp_path):
    db_url, labelled = reviewed_db
    out = tmp_path / "chat.jsonl"
    result = invoke("export", "--db", db_url, "--format", "openai-chat", "--output", out)
    assert result.exit_code == 0, result.output
    assert "audited items excluded" in " ".join(result.stdout.split())
    lines = chat_lines(out)
    review_items = [item for item in labelled if item.source == "review"]
    assert len(lines) == len(review_items) and len(review_items) < len(labelled)
    for line, item in zip(lines, review_items):
        roles = [m["role"] for m in line["messages"]]
        assert roles == ["system", "user", "assistant"]
        assert line["messages"][2]["content"] == item.label  # the reviewer's label, not the prediction
        assert line["messages"][1]["content"] == f"Is this positive or negative?\n\n{item.text}"
    tricky = next(line for line in lines if "then" in line["messages"][1]["content"])
    assert tricky["messages"][1]["content"].endswith('he said "fine"\nthen\tleft')
    assert tricky["messages"][2]["content"] == "positive"
    raw = out.read_text("utf-8")
    assert '\\"fine\\"\\nthen\\tleft' in raw  # one physical line per item: escaped in JSON

    with_audit = tmp_path / "all.jsonl"
    result = invoke("export", "--db", db_url, "--format", "openai-chat", "--include-audited", "--output", with_audit)
    assert result.exit_code == 0, result.output
    assert len(chat_lines(with_audit)) == len(labelled)


def test_openai_chat_export_from_a_labelled_file(tmp_path):
    source = tmp_path / "train.tsv"
    source.write_text("sentence\tgold\ngreat fun\t1\ndull \"mess\"\t0\n", "utf-8")
    out = tmp_path / "chat.jsonl"
    result = invoke("export", "--input", source, "--task", "sentiment", "--text-column", "sentence",
                    "--label-column", "gold", "--label-map", "1=positive", "--label-map", "0=negative", "--output", out)
    assert result.exit_code == 0, result.output
    lines = chat_lines(out)
    assert [line["messages"][-1]["content"] for line in lines] == ["positive", "negative"]
    assert all([m["role"] for m in line["messages"]][0] == "system" for line in lines)
    assert 'dull "mess"' in lines[1]["messages"][-2]["content"]
    missing = invoke("export", "--input", source, "--task", "sentiment", "--output", out)
    assert missing.exit_code != 0 and "has no label column 'label'" in " ".join(missing.output.split())
    both = invoke("export", "--output", out)
    assert both.exit_code == 2 and "exactly one of --db and --input" in " ".join(both.output.split())


def test_chat_messages_use_the_task_system_prompt_and_few_shot_turns():
    task = Task.from_dict({"name": "t", "instruction": "Text: {text}", "system": "Be brief.",
                           "labels": {"no": ["No"], "yes": ["Yes"]}})
    messages = chat_messages(task, "ok", "yes")
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Text: ok"},
                        {"role": "assistant", "content": "Yes"}]
    plain = Task.from_dict({"name": "t", "instruction": "Text: {text}", "labels": {"no": ["No"], "yes": ["Yes"]}})
    assert chat_messages(plain, "ok", "no")[0]["content"] == "Classify the text. Answer with exactly one of: No, Yes."
