"""`howsure qa`: the resumable job on the tiny random model, its errors, and one end-to-end run of
the command with the bundled model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from howsure.answers.generation import AnswerGenerator, Prompt
from howsure.answers.pipeline import QASettings, answer_questions
from howsure.backends import load_backend
from howsure.cli import app
from howsure.datasets.questions import Question
from howsure.errors import DataError, ResumeError

QUESTIONS = [Question(str(i), text, gold) for i, (text, gold) in enumerate([
    ("Is this good?", ("positive",)), ("the worst film of the year", ("negative",)), ("yes", ("yes", "Yes")),
    ("A gorgeous, witty movie", ("positive",)), ("no or maybe", ("maybe",)), ("sports business", ("sports",)),
    ("very good", ("positive",)),
])]
# Short prompts: the tiny model's tokenizer spells unknown words byte by byte (512 positions).
SHORT = Prompt(instruction="Text: {text}", examples=(("very good", "positive"),), system=None)
SHORT_VERBAL = Prompt(instruction="{text}", examples=(), system=None, answer_start="Confidence:")
SETTINGS = QASettings(estimators=("token", "p_true", "verbal", "consistency", "semantic_entropy"), samples=3,
                      prompt=SHORT, verbal_prompt=SHORT_VERBAL)


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def generator(tiny_qa_model_dir):
    return AnswerGenerator(load_backend(str(tiny_qa_model_dir), batch_size=4), max_new_tokens=6, batch_size=4)


def records(path):
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def test_an_interrupted_run_resumes_without_redoing_or_duplicating(generator, tmp_path, monkeypatch):
    whole = tmp_path / "whole.jsonl"
    answer_questions(generator, QUESTIONS, whole, settings=SETTINGS, save_hidden=tmp_path / "whole.npy",
                     chunk_questions=3)
    out, hidden = tmp_path / "out.jsonl", tmp_path / "out.npy"

    def stop_after_first_chunk(done, total):
        if done >= 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        answer_questions(generator, QUESTIONS, out, settings=SETTINGS, save_hidden=hidden, chunk_questions=3,
                         progress=stop_after_first_chunk)
    with open(out, "a", encoding="utf-8") as handle:
        handle.write('{"id": "3", "quest')  # a line torn by the kill
    asked: list[str] = []
    original = AnswerGenerator.generate

    def recording(self, prompt, texts, **options):
        if prompt == SHORT:
            asked.extend(texts)
        return original(self, prompt, texts, **options)

    monkeypatch.setattr(AnswerGenerator, "generate", recording)
    summary = answer_questions(generator, QUESTIONS, out, settings=SETTINGS, save_hidden=hidden, chunk_questions=3)
    assert asked == [q.question for q in QUESTIONS[3:]]  # finished rows were not answered again
    assert (summary.already_done, summary.done_now, summary.total) == (3, 4, 7)
    again, reference = records(out), records(whole)
    assert [r["id"] for r in again] == [q.id for q in QUESTIONS]
    for a, b in zip(again, reference):
        assert (a["answer"], a["correct"], a["judge"], a["samples"]) == (b["answer"], b["correct"], b["judge"], b["samples"])
        assert a["scores"].keys() == b["scores"].keys()
        for name, value in a["scores"].items():
            assert value == pytest.approx(b["scores"][name], abs=1e-4) if value is not None else b["scores"][name] is None
    saved = np.load(hidden, allow_pickle=False)
    assert saved.shape == (7, generator.model.config.num_hidden_layers + 1, generator.model.config.hidden_size)
    assert saved.dtype == np.float16
    np.testing.assert_allclose(saved.astype(float), np.load(tmp_path / "whole.npy").astype(float), atol=2e-2)
    assert not (tmp_path / "out.npy.parts").exists()
    # Once finished, a rerun does nothing and keeps the hidden states.
    done = answer_questions(generator, QUESTIONS, out, settings=SETTINGS, save_hidden=hidden, chunk_questions=3)
    assert done.done_now == 0 and len(records(out)) == 7 and np.load(hidden).shape[0] == 7


def test_record_format_and_summary(generator, tmp_path):
    out = tmp_path / "out.jsonl"
    summary = answer_questions(generator, QUESTIONS, out, settings=SETTINGS)
    first = records(out)[0]
    assert list(first) == ["id", "question", "answer", "gold", "correct", "judge", "scores", "verbal_raw",
                           "finish", "token_logprobs", "samples"]
    assert first["judge"] in ("exact", "alias", "f1") and isinstance(first["correct"], bool)
    assert set(first["scores"]) == {"token_mean_logprob", "token_geo_mean", "token_min", "p_true", "verbal",
                                    "consistency", "semantic_entropy"}
    assert first["verbal_raw"].startswith("Confidence:") and len(first["samples"]) == 3
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["command"] == "howsure qa" and meta["samples"] == 3
    # The random model answers nothing right: no AUROC, and the unparsed replies are counted.
    assert summary.accuracy == 0 and all(v is None for v in summary.auroc.values())
    unparsed = sum(r["scores"]["verbal"] is None for r in records(out))
    assert summary.unparsed_verbal == unparsed


def test_resume_with_other_settings_is_refused(generator, tmp_path):
    out = tmp_path / "out.jsonl"
    answer_questions(generator, QUESTIONS[:2], out, settings=QASettings(estimators=("token",), prompt=SHORT))
    with pytest.raises(ResumeError, match="estimators"):
        answer_questions(generator, QUESTIONS[:2], out, settings=QASettings(estimators=("token", "p_true"), prompt=SHORT))
    other = [Question("0", "another question", ("x",))]
    with pytest.raises(ResumeError, match="not this input's"):
        answer_questions(generator, other, out, settings=QASettings(estimators=("token",), prompt=SHORT))


def test_sampling_estimators_need_two_samples(generator, tmp_path):
    with pytest.raises(DataError, match="'consistency' needs k >= 2.*--samples 1"):
        answer_questions(generator, QUESTIONS, tmp_path / "o.jsonl",
                         settings=QASettings(estimators=("consistency",), samples=1))


def test_a_bad_temperature_writes_nothing_that_blocks_the_fixed_rerun(generator, tmp_path):
    out = tmp_path / "o.jsonl"
    with pytest.raises(DataError, match="--temperature must be a number > 0 when sampling, got -1.0"):
        answer_questions(generator, QUESTIONS[:2], out,
                         settings=QASettings(estimators=("consistency",), samples=2, temperature=-1.0, prompt=SHORT))
    assert list(tmp_path.iterdir()) == []
    fixed = answer_questions(generator, QUESTIONS[:2], out,
                             settings=QASettings(estimators=("consistency",), samples=2, prompt=SHORT))
    assert (fixed.total, fixed.done_now) == (2, 2)


def test_cli_bad_input_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "answer": ["y"]}) + "\n")
    result = CliRunner().invoke(app, ["qa", "--input", str(bad), "--output", str(tmp_path / "o.jsonl")])
    assert result.exit_code == 2 and "no question column" in result.output
    result = CliRunner().invoke(app, ["qa", "--input", str(bad), "--output", str(tmp_path / "o.jsonl"),
                                      "--question-column", "prompt", "--samples", "1"])
    assert result.exit_code == 2 and "k >= 2" in result.output


@pytest.mark.model
def test_qa_command_end_to_end_with_the_bundled_model(bundled_model_ready, tmp_path):
    questions = tmp_path / "closed.jsonl"
    runner = CliRunner()
    made = runner.invoke(app, ["datasets", "closed-qa", "-o", str(questions), "--n", "10", "--seed", "0"])
    assert made.exit_code == 0, made.output
    out = tmp_path / "qa.jsonl"
    result = runner.invoke(app, ["qa", "-i", str(questions), "-o", str(out), "--samples", "2", "--threads", "2",
                                 "--max-new-tokens", "8", "--save-hidden", str(tmp_path / "h.npy")])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output and "AUROC" in result.output
    rows = records(out)
    assert len(rows) == 10
    # The bundled model knows some capitals and colours: a real share is right.
    assert sum(r["correct"] for r in rows) >= 3
    assert all(0 <= r["scores"]["token_geo_mean"] <= 1 for r in rows if r["answer"])
    assert np.load(tmp_path / "h.npy").shape == (10, 31, 576)
