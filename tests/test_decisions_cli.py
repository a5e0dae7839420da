"""howsure thresholds / route / plan, driven through typer's CliRunner."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.cli import app
from howsure.decisions.policy import Policy

SEED_CWC = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sentiment" / "seed_cwc" / "results" / "llama31_8b_base_results.json"
LABELS = ["billing", "delivery", "refund"]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def score_records(n: int = 1200, seed: int = 0, with_gold: bool = True, *, signal: tuple[float, float] = (3.0, 2.0),
                  last_label_bias: float = 0.0) -> list[dict]:
    """Records as `howsure score` writes them, for a three-label task: the gold label's logit
    gets a Normal(*signal) boost, the last label's ``last_label_bias`` more (a biased model)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        gold = int(rng.integers(0, 3))
        logits = rng.normal(0, 1, 3)
        logits[gold] += rng.normal(*signal)
        logits[2] += last_label_bias
        p = np.exp(logits) / np.exp(logits).sum()
        record = {
            "id": f"item-{i}",
            "text": f"text {i}",
            "prediction": LABELS[int(p.argmax())],
            "confidence": float(p.max()),
            "probabilities": {label: float(v) for label, v in zip(LABELS, p)},
        }
        if with_gold:
            record["label"] = LABELS[gold]
        records.append(record)
    return records


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.fixture
def scored_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "scored.jsonl", score_records())


def test_thresholds_then_route_on_score_output(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    result = invoke("thresholds", scored_file, "--target", "0.9", "--delta", "0.05", "--out", policy_path,
                    "--model-id", "tiny")
    assert result.exit_code == 0, result.output
    assert "certified" in result.output and f"written to {policy_path}" in result.output.replace("\n", "")
    policy = Policy.load(policy_path)
    assert policy.labels == LABELS and policy.model_id == "tiny" and policy.threshold is not None

    routed_path = tmp_path / "routed.jsonl"
    result = invoke("route", scored_file, "--policy", policy_path, "--output", routed_path)
    assert result.exit_code == 0, result.output
    routed = [json.loads(line) for line in routed_path.read_text().splitlines()]
    assert len(routed) == 1200 and routed[0]["id"] == "item-0"
    probabilities = np.array([[r["probabilities"][label] for label in LABELS] for r in routed])
    assert [r["decision"] for r in routed] == [d.decision for d in policy.decide(probabilities)]
    automated = sum(r["decision"] == "auto" for r in routed)
    assert automated == policy.guarantee["n_automated"]
    assert f"{automated:,} of 1,200 items automated" in result.output
    assert {r["policy_id"] for r in routed} == {policy.policy_id}


def test_route_needs_no_gold_labels_and_writes_csv(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    assert invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path).exit_code == 0
    unlabelled = write_jsonl(tmp_path / "new.jsonl", score_records(n=50, seed=9, with_gold=False))
    result = invoke("route", unlabelled, "--policy", policy_path, "--output", tmp_path / "routed.csv")
    assert result.exit_code == 0, result.output
    with open(tmp_path / "routed.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 50 and {r["decision"] for r in rows} <= {"auto", "review"}
    assert json.loads(rows[0]["probabilities"]).keys() == set(LABELS)


def test_route_csv_quotes_texts_a_spreadsheet_would_run_and_jsonl_keeps_them(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    assert invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path).exit_code == 0
    records = score_records(n=4, seed=9, with_gold=False)
    texts = ["=HYPERLINK(\"http://x\")", "+1", "@SUM(A1)", "plain"]
    for record, text in zip(records, texts):
        record["text"] = text
    unlabelled = write_jsonl(tmp_path / "new.jsonl", records)
    assert invoke("route", unlabelled, "--policy", policy_path, "--output", tmp_path / "routed.csv").exit_code == 0
    with open(tmp_path / "routed.csv", newline="") as handle:
        assert [row["text"] for row in csv.DictReader(handle)] == ["'" + t for t in texts[:3]] + ["plain"]
    assert invoke("route", unlabelled, "--policy", policy_path, "--output", tmp_path / "routed.jsonl").exit_code == 0
    assert [json.loads(line)["text"] for line in (tmp_path / "routed.jsonl").read_text().splitlines()] == texts


def test_cost_options_print_the_manager_table_and_store_the_choice(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    result = invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path,
                    "--cost-review", "2", "--cost-error", "25", "--volume", "5000")
    assert result.exit_code == 0, result.output
    for text in ("per day at 5,000 items/day", "review all", "automate all", "cheapest", "cost-optimal certified threshold"):
        assert text in result.output
    policy = Policy.load(policy_path)
    assert policy.cost["volume_per_day"] == 5000 and policy.cost["cost_error"] == 25
    low, high = policy.guarantee["certified_range"]
    assert policy.threshold is None or low <= policy.threshold <= high


def test_per_label_error_costs(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    result = invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path, "--cost-review", "2",
                    "--cost-error", "5", "--cost-error-label", "refund=500")
    assert result.exit_code == 0, result.output
    assert Policy.load(policy_path).cost["cost_error"] == {"billing": 5.0, "delivery": 5.0, "refund": 500.0}


def test_per_class_thresholds(tmp_path):
    scored_file = write_jsonl(tmp_path / "scored.jsonl", score_records(n=3000, seed=2))
    result = invoke("thresholds", scored_file, "--target", "0.9", "--per-class", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    policy = Policy.load(tmp_path / "p.json")
    assert policy.rule == "per_class" and set(policy.class_thresholds) == set(LABELS)
    for label in LABELS:
        assert label in result.output


def test_per_class_on_two_labels_prints_the_two_sided_policy_and_route_follows_it(tmp_path):
    rng = np.random.default_rng(5)  # a draw where both sides certify something
    records = []
    for i in range(3000):
        gold = int(rng.integers(0, 2))
        p_true = 1 / (1 + np.exp(-2 * rng.normal(2.0, 2.0)))
        p_positive = p_true if gold == 1 else 1 - p_true
        records.append({"id": f"item-{i}", "label": ["negative", "positive"][gold],
                        "probabilities": {"positive": p_positive, "negative": 1 - p_positive}})
    scored_file = write_jsonl(tmp_path / "binary.jsonl", records)
    result = invoke("thresholds", scored_file, "--target", "0.9", "--per-class", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    policy = Policy.load(tmp_path / "p.json")
    accept, negative = policy.class_thresholds["positive"], policy.class_thresholds["negative"]
    line = (f"two-sided: auto-positive if P(positive) >= {accept:.6g}, auto-negative if P(positive) <= "
            f"{1 - negative:.6g}, review the middle")
    assert line in " ".join(result.output.split())
    routed = tmp_path / "routed.jsonl"
    result = invoke("route", scored_file, "--policy", tmp_path / "p.json", "--output", routed)
    assert result.exit_code == 0, result.output
    assert "auto-positive if P(positive) >=" in " ".join(result.output.split())
    for record in map(json.loads, routed.read_text().splitlines()):
        p_positive = record["probabilities"]["positive"]
        assert (record["decision"] == "auto") == (p_positive >= accept or p_positive <= 1 - negative)
        if record["decision"] == "auto":
            assert record["decision_label"] == ("positive" if p_positive >= accept else "negative")


def test_per_class_on_three_labels_prints_no_two_sided_line(tmp_path):
    scored_file = write_jsonl(tmp_path / "scored.jsonl", score_records(n=1500, seed=2))
    result = invoke("thresholds", scored_file, "--target", "0.9", "--per-class", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert "two-sided" not in result.output


def test_the_per_class_help_says_it_is_the_two_sided_policy():
    result = invoke("thresholds", "--help")
    text = " ".join(result.output.replace("│", " ").split())
    assert "On two labels this IS the two-sided policy" in text
    assert "review the middle" in text


@pytest.mark.skipif(not SEED_CWC.exists(), reason="shared seed_cwc data not present")
def test_the_cached_llama_results_two_sided_matches_certify_two_sided(tmp_path):
    from howsure.decisions.certification import certify_two_sided

    result = invoke("thresholds", SEED_CWC, "--method", "fixed_sequence", "--per-class", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    # docs/decisions.md, seed_cwc figures section 2 (there 0.001843, to 6 decimals).
    assert ("two-sided: auto-positive if P(positive) >= 0.980369, auto-negative if P(positive) <= "
            "0.00184255, review the middle") in " ".join(result.output.split())
    records = json.loads(SEED_CWC.read_text())["results"]
    p_positive = np.array([r["confidence"] if r["prediction"] == "positive" else 1 - r["confidence"] for r in records])
    certificate = certify_two_sided([r["expected"] == "positive" for r in records], p_positive,
                                    method="fixed_sequence")
    rule = Policy.load(tmp_path / "p.json").two_sided()
    assert rule.accept_above == certificate.accept_above
    assert rule.reject_below == pytest.approx(certificate.reject_below, abs=1e-15)


def test_a_csv_table_with_a_confidence_and_a_correctness_column(tmp_path):
    records = score_records(n=1200, seed=3)
    path = tmp_path / "table.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["conf", "pred", "ok"])
        for r in records:
            writer.writerow([r["confidence"], r["prediction"], int(r["prediction"] == r["label"])])
    result = invoke("thresholds", path, "--target", "0.9", "--prob-column", "conf", "--prediction-column", "pred",
                    "--correct-column", "ok", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    from_jsonl = tmp_path / "q.json"
    invoke("thresholds", write_jsonl(tmp_path / "s.jsonl", records), "--target", "0.9", "--out", from_jsonl)
    assert Policy.load(tmp_path / "p.json").threshold == Policy.load(from_jsonl).threshold


@pytest.mark.skipif(not SEED_CWC.exists(), reason="shared seed_cwc data not present")
def test_the_cached_llama_results_certify_252_of_1000(tmp_path):
    """The public write-up's cached results: {"results": [{text, expected, prediction, confidence, correct}]}."""
    result = invoke("thresholds", SEED_CWC, "--method", "fixed_sequence", "--out", tmp_path / "p.json")
    assert result.exit_code == 0, result.output
    assert "automates 252 of 1000 (25.2%)" in result.output.replace("\n", " ")
    routed = tmp_path / "routed.jsonl"
    assert invoke("route", SEED_CWC, "--policy", tmp_path / "p.json", "--output", routed).exit_code == 0
    decisions = [json.loads(line)["decision"] for line in routed.read_text().splitlines()]
    assert decisions.count("auto") == 252


def test_plan_prints_labels_needed_and_draws_the_chart(tmp_path, scored_file):
    chart = tmp_path / "plan.png"
    result = invoke("plan", scored_file, "--target", "0.9", "--rates", "0.2,0.99", "--draws", "5", "--chart", chart)
    assert result.exit_code == 0, result.output
    assert "not reachable" in result.output  # 99 % automation at 90 % accuracy
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------------------------- bad input
def task_file(tmp_path, labels) -> Path:
    path = tmp_path / "task.toml"
    path.write_text('instruction = "Which team?\\n\\n{text}"\n[labels]\n' + "".join(f'{l} = ["{l}"]\n' for l in labels))
    return path


@pytest.mark.parametrize(
    "args,message",
    [
        (["--target", "1.5"], "target accuracy must be in (0, 1), got 1.5"),
        (["--target", "95"], "accuracy is a fraction, write 0.95"),
        (["--delta", "0"], "delta (the chance the guarantee may fail) must be in (0, 1), got 0.0"),
        (["--delta", "1"], "must be in (0, 1), got 1.0"),
        (["--method", "holm"], "unknown certification method 'holm'"),
        (["--cost-review", "2"], "cost optimisation needs --cost-review and --cost-error"),
        (["--cost-review", "2", "--cost-error", "-1"], "must be a number >= 0, got -1.0"),
        (["--cost-review", "2", "--cost-error-label", "refund"], "--cost-error-label expects LABEL=COST, got 'refund'"),
        (["--prob-column", "score"], "has no column 'score'"),
    ],
)
def test_bad_thresholds_options_exit_2_with_a_message(tmp_path, scored_file, args, message):
    result = invoke("thresholds", scored_file, "--out", tmp_path / "p.json", *args)
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())
    assert not (tmp_path / "p.json").exists()


def test_labels_not_in_the_task_exit_2(tmp_path, scored_file):
    result = invoke("thresholds", scored_file, "--task", task_file(tmp_path, ["billing", "delivery"]),
                    "--out", tmp_path / "p.json")
    assert result.exit_code == 2
    assert "probability for label 'refund', which is not one of the labels ['billing', 'delivery']" in " ".join(result.output.split())


@pytest.mark.parametrize(
    "content,name,message",
    [
        (None, "missing.jsonl", "does not exist"),
        ("a,b\n1,2\n", "table.xlsx", "expected one of .jsonl, .json, .csv, .tsv, .parquet"),
        ("{not json}\n", "bad.jsonl", "bad.jsonl:1 is not valid JSON"),
        ("", "empty.jsonl", "holds no records"),
        ('{"probabilities": {"a": 0.9, "b": 0.1}}\n', "nogold.jsonl", "has neither gold labels nor correctness"),
        ('{"prediction": "a", "confidence": 0.3, "label": "a"}\n{"prediction": "b", "confidence": 0.9, "label": "a"}\n',
         "low.jsonl", "record 0 has confidence 0.3 < 0.5"),
        ('{"text": "x", "label": "a"}\n', "noprob.jsonl", "has no 'probabilities' or 'confidence' column"),
    ],
)
def test_bad_input_files_exit_2(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    result = invoke("thresholds", path, "--out", tmp_path / "p.json")
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_route_ignores_gold_labels_it_does_not_need(tmp_path, scored_file):
    policy_path = tmp_path / "policy.json"
    assert invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path).exit_code == 0
    records = score_records(n=20, seed=4)
    records[0]["label"] = "not-a-label"
    result = invoke("route", write_jsonl(tmp_path / "x.jsonl", records), "--policy", policy_path,
                    "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 0, result.output


def test_route_refuses_a_bad_policy_and_mismatched_labels(tmp_path, scored_file):
    (tmp_path / "bad.json").write_text('{"format": "howsure.policy", "schema_version": 9}')
    result = invoke("route", scored_file, "--policy", tmp_path / "bad.json", "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "policy schema version 9 is not supported" in " ".join(result.output.split())

    policy_path = tmp_path / "policy.json"
    assert invoke("thresholds", scored_file, "--target", "0.9", "--out", policy_path).exit_code == 0
    other = write_jsonl(tmp_path / "other.jsonl", [{"probabilities": {"billing": 0.5, "spam": 0.5}}])
    result = invoke("route", other, "--policy", policy_path, "--output", tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert "probability for label 'spam', which is not one of the labels" in " ".join(result.output.split())
    assert not (tmp_path / "out.jsonl").exists()


def test_the_decision_commands_import_no_heavy_library():
    """thresholds and route must start in about a second: nothing on their path loads torch."""
    code = (
        "import sys, howsure.cli.decisions, howsure.decisions.policy, howsure.decisions\n"
        "heavy = [m for m in ('torch', 'transformers', 'sklearn', 'pandas', 'scipy.stats') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    src = Path(__file__).resolve().parents[1] / "src"
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               env={"PYTHONPATH": str(src), "PATH": ""})
    assert completed.returncode == 0, completed.stderr


def test_fixed_sequence_warns_when_the_most_confident_items_miss_the_target(tmp_path):
    records = score_records(600, seed=2)
    # The most confident item of all is wrong: the top 9 items are 88.9 % right, below 90 %.
    records[0]["probabilities"] = {"billing": 0.999999, "delivery": 0.0000005, "refund": 0.0000005}
    records[0]["label"] = "refund"
    path = write_jsonl(tmp_path / "scored.jsonl", records)
    fixed = invoke("thresholds", path, "--method", "fixed_sequence", "--target", 0.9, "--out", tmp_path / "f.json")
    assert fixed.exit_code == 0, fixed.output
    assert "the 9 most confident items are only 88.9% right: fixed_sequence assumes no top slice of fewer than 29" \
        in " ".join(fixed.output.split())
    default = invoke("thresholds", path, "--target", 0.9, "--out", tmp_path / "d.json")
    assert default.exit_code == 0 and "fixed_sequence assumes" not in default.output


def test_run_thresholds_is_the_whole_command_and_writes_nothing(tmp_path, scored_file):
    from howsure.pipelines.thresholds import run_thresholds

    before = sorted(tmp_path.iterdir())
    result = run_thresholds(scored_file, target=0.9, fit_calibrator="temperature", certify_share=0.5)
    assert sorted(tmp_path.iterdir()) == before  # saving is the caller's
    assert result.split is not None and result.raw_note is None
    # The certificate and the table stand on the certifying half only, as the policy's certificate.
    assert result.used.tolist() == result.split.certify_idx.tolist() and 0 < result.used.size < 1200
    assert result.certificate.n_calibration == result.used.size == result.policy.guarantee["n_calibration"]
    assert result.certificate.threshold == pytest.approx(result.policy.threshold)
    assert result.rows and not any("cheapest" in row.note for row in result.rows)  # no costs given
