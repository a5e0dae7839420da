"""The review loop closed: reviewed items exported as chat fine-tuning JSONL, a fine-tune on them
that never sees the audited or certification items, the result served as a new model version
with its own policy, rollback to the previous model, and recalibration's overlap guard."""

from __future__ import annotations

import json

import numpy as np
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


# ---------------------------------------------------------------------------------- the loop
def loop_db(tmp_path, model_dir):
    """A SQLite file: version 1 (model: the tiny model), 300 served items at audit rate 0.5
    (recorded), every queued item reviewed."""
    from loop_sim import loop_policy_dict

    db = tmp_path / "reviews.db"
    with ReviewStore(str(db)) as store:
        record = store.add_policy(loop_policy_dict(model_id=str(model_dir)), actor="admin", note="first")
        review(store, serve(store, record, 300, audit_rate=0.5, record_rate=True))
    return str(db)


FINETUNE_FAST = ("--max-steps", 2, "--batch-size", 8, "--eval-interval", 1, "--checkpoint-interval", 100,
                 "--validation-fraction", 0.2, "--learning-rate", 0.01, "--fit-calibrator", "platt")


@pytest.fixture
def finetuned(tmp_path, tiny_model_dir):
    """`howsure finetune --db` run once on `loop_db`: (db, adapter directory, its output)."""
    db = loop_db(tmp_path, tiny_model_dir)
    adapter = tmp_path / "adapter"
    result = invoke("finetune", "--db", db, "--output", adapter, *FINETUNE_FAST)
    assert result.exit_code == 0, result.output
    return db, adapter, " ".join(result.output.split())


def test_finetune_from_reviews_keeps_audited_and_certification_items_out(finetuned):
    from howsure.calibration.fitting import item_hashes
    from howsure.decisions.recalibration import hash_share
    from howsure.finetune import trained_hashes

    db, adapter, output = finetuned
    trained = trained_hashes(adapter)
    with ReviewStore(db) as store:
        labelled = store.labelled_items()
        history = store.policy_history()
        new = store.active_policy()
    audited = [item for item in labelled if item.source == "audit"]
    review_items = [item for item in labelled if item.source == "review"]
    assert audited and review_items
    hashes = dict(zip((item.item_id for item in labelled), item_hashes([i.text for i in labelled], "text")))
    assert not trained & {hashes[item.item_id] for item in audited}  # the guarantee's sample never trained on
    certify_draw = {hashes[i.item_id] for i in review_items if hash_share(i.item_id, 0) < 0.5}
    assert certify_draw and not trained & certify_draw  # nor the next certificate's review items
    fit_draw = {hashes[i.item_id] for i in review_items if 0.5 <= hash_share(i.item_id, 0) < 0.7}
    assert fit_draw and not trained & fit_draw
    # Every other review item was trained on (train + validation split).
    assert trained == {hashes[i.item_id] for i in review_items} - certify_draw - fit_draw
    assert f"{len(trained)} reviewed items to train on; kept out: {len(audited)} audited" in output

    # The result is a new model version: its policy names the adapter and its weights, and was
    # certified on items the fine-tune never saw.
    assert [r.version for r in history] == [2, 1] and new.version == 2
    body = new.body
    assert body["adapter"]["directory"] == str(adapter.resolve())
    from howsure.decisions.policy import adapter_checksum

    assert body["adapter"]["checksum"] == adapter_checksum(adapter)
    assert body["certified_on"]["hashes"] and not set(body["certified_on"]["hashes"]) & trained
    assert set(body["certified_on"]["hashes"]) <= {hashes[i.item_id] for i in labelled}
    assert body["model_id"] == history[1].body["model_id"] and "overlap" not in body
    assert "policy version 2 (" in output and "is now active" in output
    listing = runner.invoke(app, ["policy", "list", "--db", db], env={"COLUMNS": "400"}).stdout
    rows = {line.split()[0]: line for line in listing.splitlines() if line.split() and line.split()[0] in ("*2", "1")}
    assert str(adapter.resolve()) in rows["*2"] and rows["1"].rstrip().endswith("-")  # each policy's adapter
    again = invoke("finetune", "--db", db, "--output", adapter, *FINETUNE_FAST)
    assert again.exit_code == 0, again.output
    assert "already registered as policy version 2" in " ".join(again.output.split())
    with ReviewStore(db) as store:
        assert len(store.policy_history()) == 2


def test_the_service_scores_through_the_active_policy_adapter_and_rollback_returns(finetuned, tiny_model_dir):
    from fastapi.testclient import TestClient

    from howsure.backends import load_backend
    from howsure.service.app import create_app

    db, adapter, _ = finetuned
    base = load_backend(str(tiny_model_dir))
    built = []

    def factory(model, adapter_dir):
        built.append((model, adapter_dir))
        return load_backend(model, adapter=adapter_dir)

    store = ReviewStore(db)
    try:
        token = (store.add_user("cody", "client", actor="t"), store.create_token("cody", actor="t"))[1]
        app = create_app(store, base, backend_factory=factory, model=str(tiny_model_dir), audit_rate=0.0)
        headers = {"Authorization": f"Bearer {token}"}
        text = "a tender, funny film"
        with TestClient(app) as client:
            def classify():
                response = client.post("/v1/classify", json={"items": [{"text": text}]}, headers=headers)
                assert response.status_code == 200, response.text
                [item] = response.json()["items"]
                return item
            with_adapter = classify()
            assert built == [(str(tiny_model_dir), str(adapter.resolve()))]
            assert with_adapter["policy_version"] == 2
            [adapted] = load_backend(str(tiny_model_dir), adapter=str(adapter.resolve())).label_scores(
                app.state.service.active().task, [text])
            stored = store.get_item(with_adapter["item_id"])
            assert np.allclose(list(stored.raw_probabilities.values()), adapted.probabilities, atol=1e-6)
            # Roll back: the previous model (no adapter) and its policy together.
            result = invoke("policy", "rollback", "--db", db)
            assert result.exit_code == 0 and "is active (was 2)" in " ".join(result.stdout.split())
            without = classify()
            assert without["policy_version"] == 1 and len(built) == 1  # no backend built for the base
            [raw] = base.label_scores(app.state.service.active().task, [text])
            assert np.allclose(list(store.get_item(without["item_id"]).raw_probabilities.values()), raw.probabilities,
                               atol=1e-6)
            assert not np.allclose(raw.probabilities, adapted.probabilities, atol=1e-4)
            # Rolling back again returns to the fine-tuned model, whose backend is kept, not rebuilt.
            assert invoke("policy", "rollback", "--db", db).exit_code == 0
            assert classify()["policy_version"] == 2 and len(built) == 1
    finally:
        store.close()


def test_a_changed_adapter_is_refused_not_served(finetuned, tiny_model_dir):
    from howsure.backends import load_backend
    from howsure.errors import PolicyError
    from howsure.service.app import create_app

    db, adapter, _ = finetuned
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes() + b" ")
    with ReviewStore(db) as store, pytest.raises(PolicyError, match="has other weights"):
        create_app(store, load_backend(str(tiny_model_dir)), backend_factory=lambda m, a: None)


def test_recalibrate_refuses_items_the_adapter_trained_on(finetuned):
    db, adapter, _ = finetuned
    from howsure.calibration.fitting import item_hashes
    from howsure.finetune import trained_hashes

    # Items the version-2 model decided whose texts it trained on (a client sent them again).
    trained = trained_hashes(adapter)
    with ReviewStore(db) as store:
        active = store.active_policy()
        old = [i for i in store.labelled_items() if item_hashes([i.text], "text")[0] in trained][:40]
        served = store.add_items([NewItem(
            text=i.text, prediction=i.prediction, confidence=0.5, probabilities=i.raw_probabilities,
            raw_probabilities=i.raw_probabilities, decision="review", queue_reason="review",
            policy_version=active.version, policy_id=active.policy_id) for i in old], actor="client")
        truth = {record.id: item.label for record, item in zip(served, old)}
        while (claimed := store.claim_next("rev")) is not None:
            store.submit_review(claimed.id, "rev", truth[claimed.id])
    refused = invoke("recalibrate", "--db", db, "--calibrator", "none")
    assert refused.exit_code != 0
    assert f"{len(old)} of the {len(old)} reviewed items were trained on by the active policy's adapter" in \
        " ".join(refused.output.split())
    allowed = invoke("recalibrate", "--db", db, "--calibrator", "none", "--allow-overlap", "--json")
    assert allowed.exit_code == 0, allowed.output
    report = json.loads(allowed.stdout)
    assert report["overlap"].startswith(f"{len(old)} of the {len(old)} reviewed items")
    with ReviewStore(db) as store:
        body = store.active_policy().body
    assert body["overlap"] == report["overlap"] and body["adapter"]["checksum"]


def test_policy_adapter_fields_round_trip_and_old_files_keep_their_id(loop_policy, tmp_path):
    from howsure.decisions.policy import Policy
    from howsure.errors import PolicyError

    old = Policy.from_dict(loop_policy)
    assert old.adapter is None and old.policy_id == loop_policy["policy_id"]
    assert not {"adapter", "certified_on", "overlap"} & set(old.to_dict())
    body = {**{k: v for k, v in loop_policy.items() if k != "policy_id"},
            "adapter": {"directory": "/models/v2", "checksum": "ab" * 32},
            "certified_on": {"key": "text", "n_items": 1, "hashes": ["0123456789abcdef"]}, "overlap": None}
    new = Policy.from_dict(body)
    again = Policy.load(new.save(tmp_path / "p.json"))
    assert again.adapter == body["adapter"] and again.certified_on == body["certified_on"]
    assert again.policy_id == new.policy_id != old.policy_id
    with pytest.raises(PolicyError, match="policy adapter must be"):
        Policy.from_dict({**body, "adapter": {"directory": "/models/v2"}})
