import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from howsure.backends import load_backend
from howsure.io.texts import TextRows
from howsure.errors import DataError, ResumeError
from howsure.backends.labels import LowLabelMassWarning
from howsure.pipelines.score_job import meta_path, score_rows
from howsure.core.task import load_task

# The tiny random model puts almost no probability on the labels; the warning is tested below.
pytestmark = pytest.mark.filterwarnings("ignore::howsure.backends.labels.LowLabelMassWarning")

TEXTS = [f"review number {i}: " + ("good " * (i % 7)) + ("bad " * (i % 3)) for i in range(40)]


def rows(texts=TEXTS):
    return TextRows(list(range(len(texts))), list(texts), [f"id{i}" for i in range(len(texts))],
                    ["positive" if i % 2 else "negative" for i in range(len(texts))])


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def backend(tiny_model_dir):
    return load_backend(str(tiny_model_dir), batch_size=4)


class Interrupt(Exception):
    pass


def test_interrupted_run_resumes_without_rescoring(tmp_path, backend):
    task = load_task("sentiment")
    full = tmp_path / "full.jsonl"
    score_rows(backend, task, rows(), full, chunk_rows=8)

    out = tmp_path / "resumed.jsonl"

    def stop_after_two_chunks(done, total):
        if done >= 16:
            raise Interrupt

    with pytest.raises(Interrupt):
        score_rows(backend, task, rows(), out, chunk_rows=8, progress=stop_after_two_chunks)
    assert len(records(out)) == 16
    with open(out, "a") as handle:  # a kill in the middle of a write leaves a torn line
        handle.write('{"row": 16, "id": "id16", "te')
    calls = []
    summary = score_rows(backend, task, rows(), out, chunk_rows=8,
                         progress=lambda done, total: calls.append(done))
    assert summary.already_done == 16 and summary.scored_now == 24
    assert calls[0] == 16  # the bar starts where the last run stopped
    a, b = records(full), records(out)
    assert [r["id"] for r in b] == [r["id"] for r in a]
    for x, y in zip(a, b):
        assert x["label"] == y["label"] and x["prediction"] == y["prediction"]
        np.testing.assert_allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-6)
    again = score_rows(backend, task, rows(), out)
    assert again.scored_now == 0 and len(records(out)) == 40


def test_resume_refuses_other_task_or_foreign_file(tmp_path, backend):
    out = tmp_path / "out.jsonl"
    score_rows(backend, load_task("sentiment"), rows(TEXTS[:3]), out)
    other = load_task({"instruction": "Yes or no? {text}", "labels": {"yes": ["yes"], "no": ["no"]}})
    with pytest.raises(ResumeError, match="was written with task_fingerprint"):
        score_rows(backend, other, rows(TEXTS[:3]), out)
    assert len(records(out)) == 3  # nothing already stored is lost
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text('{"precious": true}\n')
    with pytest.raises(ResumeError, match="was not written by `howsure score`"):
        score_rows(backend, other, rows(TEXTS[:3]), foreign)
    assert foreign.read_text() == '{"precious": true}\n'


def test_resume_refuses_another_input_but_takes_a_grown_one(tmp_path, backend):
    """a.csv (hello, world) scored into out, then b.csv (foo, bar, baz) into the same out: its
    rows 0 and 1 are not the stored ones, so nothing is mixed in and both inputs are named."""
    task = load_task("sentiment")
    out = tmp_path / "out.jsonl"
    first = TextRows([0, 1], ["hello", "world"], ["0", "1"], [None, None])
    score_rows(backend, task, first, out, source="a.csv")
    stored = out.read_text()
    other = TextRows([0, 1, 2], ["foo", "bar", "baz"], ["0", "1", "2"], [None, None, None])
    with pytest.raises(ResumeError, match=r"holds scores of 'a.csv' and this run reads 'b.csv'.*"
                                          r"id '0' is 'hello' there and 'foo' here"):
        score_rows(backend, task, other, out, source="b.csv")
    assert out.read_text() == stored
    fewer = TextRows([0], ["hello"], ["0"], [None])  # a stored row the input no longer has
    with pytest.raises(ResumeError, match="id '1' is 'world' there and not a row with text here"):
        score_rows(backend, task, fewer, out, source="a.csv")
    grown = TextRows([0, 1, 2], ["hello", "world", "again"], ["0", "1", "2"], [None, None, None])
    summary = score_rows(backend, task, grown, out, source="a-with-one-more.csv")
    assert (summary.already_done, summary.scored_now) == (2, 1)
    assert [r["text"] for r in records(out)] == ["hello", "world", "again"]


def test_resume_refuses_another_top_k(tmp_path, backend):
    task = load_task("sentiment")
    out = tmp_path / "out.jsonl"
    score_rows(backend, task, rows(TEXTS[:3]), out, top_k=10)
    assert json.loads(meta_path(out).read_text())["top_k"] == 10
    with pytest.raises(ResumeError, match="was written with top_k = 10, this run has 5"):
        score_rows(backend, task, rows(TEXTS[:4]), out, top_k=5)
    # A sidecar written before top_k was recorded: the stored records' top tokens tell it.
    meta = json.loads(meta_path(out).read_text())
    del meta["top_k"]
    meta_path(out).write_text(json.dumps(meta))
    with pytest.raises(ResumeError, match="was written with top_k = 10, this run has 5"):
        score_rows(backend, task, rows(TEXTS[:4]), out, top_k=5)
    assert score_rows(backend, task, rows(TEXTS[:4]), out, top_k=10).scored_now == 1
    assert {len(r["top_tokens"]) for r in records(out)} == {10}


def test_low_label_mass_warns_once_over_every_row_of_the_output(tmp_path, backend):
    task = load_task("sentiment")
    out = tmp_path / "out.jsonl"
    with pytest.warns(LowLabelMassWarning) as caught:
        summary = score_rows(backend, task, rows(TEXTS[:20]), out, chunk_rows=4)
    assert len(caught) == 1  # once for the run, not once per chunk
    assert f"median probability on the labels is {summary.median_label_mass:.3f}" in str(caught[0].message)
    masses = [sum(r["label_mass"].values()) for r in records(out)]
    assert summary.median_label_mass < 0.05
    assert summary.median_label_mass == pytest.approx(np.median(masses), abs=1e-6)
    with pytest.warns(LowLabelMassWarning) as caught:  # a resume with nothing left still warns
        again = score_rows(backend, task, rows(TEXTS[:20]), out)
    assert again.scored_now == 0 and len(caught) == 1
    assert again.median_label_mass == pytest.approx(summary.median_label_mass, abs=1e-6)


def test_invalid_rows_fatal_or_skipped(tmp_path, backend):
    bad = TextRows([0, 2], ["ok", "fine"], ["0", "2"], [None, None], invalid=[(1, "empty text")], lines=[2, 4, 5])
    with pytest.raises(DataError, match="1 row\\(s\\) have no usable text: row 2 \\(line 4\\): empty text"):
        score_rows(backend, load_task("sentiment"), bad, tmp_path / "x.jsonl")
    summary = score_rows(backend, load_task("sentiment"), bad, tmp_path / "y.jsonl", on_invalid="skip")
    assert summary.skipped == [("row 2 (line 4)", "empty text")]
    assert [r["row"] for r in records(tmp_path / "y.jsonl")] == [0, 2]


def test_killed_cli_run_resumes_to_the_same_output(tmp_path, tiny_model_dir):
    """Kill -9 a real `howsure score` process halfway, run it again: same rows, no duplicates."""
    source = tmp_path / "in.csv"
    source.write_text("text\n" + "".join(f"text {i} {'good ' * (i % 5)}\n" for i in range(3000)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    cmd = [sys.executable, "-m", "howsure", "score", "-i", str(source), "-m", str(tiny_model_dir),
           "--batch-size", "64"]
    reference = tmp_path / "ref.jsonl"
    subprocess.run(cmd + ["-o", str(reference)], env=env, check=True, capture_output=True)
    out = tmp_path / "out.jsonl"
    process = subprocess.Popen(cmd + ["-o", str(out)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and (not out.exists() or out.stat().st_size == 0):
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(out.read_text().splitlines())
    assert 0 < partial < 3000, f"kill landed at {partial} rows; the test needs it halfway"
    result = subprocess.run(cmd + ["-o", str(out)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "already done" in result.stdout
    ref, got = records(reference), records(out)
    assert [r["id"] for r in got] == [r["id"] for r in ref]
    for x, y in zip(ref, got):
        np.testing.assert_allclose(list(x["probabilities"].values()), list(y["probabilities"].values()), atol=1e-6)
