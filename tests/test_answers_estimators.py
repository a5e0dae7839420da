"""Judges, verbal-confidence parsing, sampling estimators and question reading, on tables of
cases (no model)."""

from __future__ import annotations

import json
import math

import pytest

from howsure.answers import estimators as est
from howsure.answers.judges import AnswerJudge, normalise, token_f1
from howsure.core.scores import LabelScores
from howsure.datasets.questions import CLOSED_KINDS, closed_form_questions, parse_gold, read_questions
from howsure.errors import DataError

import numpy as np


@pytest.mark.parametrize("reply, expected", [
    ("Confidence: 0.8", 0.8),
    ("confidence:0.35", 0.35),
    ("Confidence: .9", 0.9),
    ("80%", 0.8),
    ("I am 95 % sure", 0.95),
    ("about 70 percent", 0.7),
    ("eighty percent", 0.8),
    ("Ninety-five percent sure", 0.95),
    ("one hundred percent", 1.0),
    ("Confidence: 85", 0.85),
    ("Confidence: 8/10", 0.8),
    ("4 out of 5", 0.8),
    ("Confidence: high", 0.8),
    ("Confidence: very low", 0.1),
    ("I am not sure", 0.3),
    ("Confidence: 0,7", 0.7),
    ("My confidence level is 0.6.", 0.6),
    ("0.25", 0.25),
    ("Confidence: 0.8 or 0.9", 0.8),
    ("Confidence: 150%", None),
    ("Confidence: 1.5", None),
    ("Confidence: -0.2", None),
    ("The answer is Paris.", None),
    ("", None),
    (None, None),
    ("Confidence: Tokyo", None),
])
def test_verbal_confidence_parsing(reply, expected):
    got = est.parse_confidence(reply)
    assert got == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize("answer, gold, correct, judge", [
    ("Paris", ["Paris"], True, "exact"),
    ("the Paris.", ["paris"], True, "exact"),
    ("  PARIS!! ", ["Paris"], True, "exact"),
    ("Zürich", ["Zurich"], True, "exact"),
    ("Bob Russell", ["Bobby Scott", "Bob Russell"], True, "alias"),
    ("William Shakespeare", ["Shakespeare"], True, "f1"),          # F1 2/3
    ("The capital of France is Paris", ["Paris"], False, "f1"),    # F1 1/3
    ("London", ["Paris", "Paris, France"], False, "f1"),
    ("", ["Paris"], False, "f1"),
    ("a", ["the"], False, "f1"),                                    # both empty after normalising
])
def test_rule_judges(answer, gold, correct, judge):
    verdict = AnswerJudge().judge(["q"], [answer], [gold])[0]
    assert (verdict.correct, verdict.judge) == (correct, judge)


def test_normalise_and_f1():
    assert normalise("The  Eagles, an American band.") == "eagles american band"
    assert token_f1("William Shakespeare", "Shakespeare") == pytest.approx(2 / 3)
    assert token_f1("a b c", "d") == 0.0
    with pytest.raises(DataError, match="F1 threshold"):
        AnswerJudge(f1_threshold=0)


class YesBackend:
    """A backend answering every yes/no task with P(first label) = 0.9 and recording the texts."""

    model_id = "yes-backend"

    def __init__(self, first: float = 0.9):
        self.first = first
        self.texts: list[str] = []

    def label_scores(self, task, texts, **_):
        self.texts.extend(texts)
        p = np.array([self.first, 1 - self.first])
        return [LabelScores(list(task.labels), p, p, 0.0) for _ in texts]


def test_llm_judge_decides_only_when_no_rule_accepts():
    backend = YesBackend()
    verdicts = AnswerJudge(llm=backend).judge(["q1", "q2"], ["Paris", "Lutetia"], [["Paris"], ["Paris"]])
    assert [(v.correct, v.judge) for v in verdicts] == [(True, "exact"), (True, "llm")]
    assert len(backend.texts) == 1 and "Lutetia" in backend.texts[0] and "Paris" in backend.texts[0]
    no = AnswerJudge(llm=YesBackend(0.2)).judge(["q"], ["Lutetia"], [["Paris"]])[0]
    assert (no.correct, no.judge) == (False, "llm")


def test_p_true_reads_the_true_label_of_a_yes_no_task():
    backend = YesBackend(0.7)
    assert est.p_true(backend, ["What is the capital of France?"], ["Paris"]) == [pytest.approx(0.7)]
    assert "Proposed answer: Paris" in backend.texts[0]
    assert list(est.P_TRUE_TASK.labels) == ["true", "false"]


def test_consistency_and_semantic_entropy():
    assert est.consistency("Paris", ["paris", "Paris.", "London", "the Paris"]) == pytest.approx(0.75)
    assert est.semantic_entropy(est.normalised_clusters(["a b", "A B", "a b!"])) == pytest.approx(1.0)
    assert est.semantic_entropy(est.normalised_clusters(["x", "y", "z", "w"])) == pytest.approx(0.0)
    two = est.semantic_entropy([0, 0, 1, 1])
    assert two == pytest.approx(1 - math.log(2) / math.log(4))
    with pytest.raises(DataError, match="k >= 2.*k = 1"):
        est.consistency("Paris", ["Paris"])
    with pytest.raises(DataError, match="k >= 2"):
        est.semantic_entropy([0])


def test_entailment_clusters_merge_equivalent_answers():
    merged = est.entailment_clusters(YesBackend(0.9), "q", ["Paris", "paris", "the French capital"])
    assert merged == [0, 0, 0]
    apart = est.entailment_clusters(YesBackend(0.1), "q", ["Paris", "paris", "London"])
    assert apart[0] == apart[1] != apart[2]


def test_estimator_names_are_checked():
    assert est.parse_estimators("token, p_true,token") == ["token", "p_true"]
    with pytest.raises(DataError, match="'logits' is not one of"):
        est.parse_estimators("token,logits")


def test_questions_from_the_shared_files(shared_data):
    nq = read_questions(shared_data / "qa" / "nq_open_dev.jsonl", limit=5)
    assert nq[0].question == "when was the last time anyone was on the moon"
    assert nq[0].gold == ("14 December 1972 UTC", "December 1972") and nq[0].id == "0"
    simple = read_questions(shared_data / "qa" / "simpleqa.csv", limit=3)
    assert simple[0].question == "Who received the IEEE Frank Rosenblatt Award in 2010?"
    assert simple[0].gold == ("Michio Sugeno",)


def test_question_files_and_their_errors(tmp_path):
    good = tmp_path / "q.csv"
    good.write_text('id,query,gold\na,What is 1+1?,"[""2"", ""two""]"\nb,Capital of Peru?,Lima|Lima city\n')
    rows = read_questions(good, separator="|")
    assert [(q.id, q.gold) for q in rows] == [("a", ("2", "two")), ("b", ("Lima", "Lima city"))]
    assert read_questions(good)[1].gold == ("Lima|Lima city",)  # no separator: one answer
    no_question = tmp_path / "bad.jsonl"
    no_question.write_text(json.dumps({"text": "x", "answer": ["y"]}) + "\n")
    with pytest.raises(DataError, match="no question column.*columns are: text, answer"):
        read_questions(no_question)
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"question": "q1", "answer": ["y"]}) + "\n"
                     + json.dumps({"question": "q2", "answer": []}) + "\n")
    with pytest.raises(DataError, match=r"row 2 \(line 2\).*gold answer list \[\] is empty"):
        read_questions(empty)
    with pytest.raises(DataError, match="answer column 'gold'"):
        read_questions(empty, answer_column="gold")
    with pytest.raises(DataError, match=r"gold answer list \['', ' '\] is empty"):
        parse_gold(["", " "], "row 1")


def test_closed_form_questions_are_seeded_and_checked():
    first = closed_form_questions(40, seed=4)
    assert first == closed_form_questions(40, seed=4) and first != closed_form_questions(40, seed=5)
    assert {q.id.split("-")[0] for q in first} == set(CLOSED_KINDS)
    sums = [q for q in first if "plus" in q.question]
    for q in sums:
        a, b = (int(x) for x in q.question.removeprefix("What is ").rstrip("?").split(" plus "))
        assert q.gold[0] == str(a + b)
    with pytest.raises(DataError, match="'planets' is not one of"):
        closed_form_questions(4, kinds=["planets"])
