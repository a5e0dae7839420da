"""`howsure qa` as one call: answer, judge and score every question into a JSONL file, resumably.

Questions are done in chunks, in input order; each chunk's records are written and flushed before
the next starts (as `howsure.pipelines.score_job` does), so an interrupted run leaves a prefix of
the final file (a torn last line is cut on resume) and running it again does only the rest. The
sidecar ``OUT.meta.json`` records the model, adapter, prompt, decoding and estimator settings; a
resume with other settings, or on an input whose questions differ for the ids already written, is
a `ResumeError`.

Hidden states (``save_hidden``): each chunk's rows go to ``FILE.npy.parts/<first row>.npy``
before its records are written; when every question is done they are joined into ``FILE.npy``
(float16, shape (n_questions, n_layers + 1, hidden), rows in output order, no pickle) and the
parts removed.

One record per question (see docs/answers.md)::

    {"id", "question", "answer", "gold": [...], "correct": bool, "judge": "exact|alias|f1|llm",
     "scores": {name: number or null}, "verbal_raw": str or null, "finish": "stop|eos|length",
     "token_logprobs": [...], "samples": [...]}
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from howsure.answers import estimators as est
from howsure.answers.generation import HIDDEN_AT, AnswerGenerator, Prompt
from howsure.answers.judges import AnswerJudge
from howsure.backends.cache import adapter_record, scorer_adapter
from howsure.backends.base import Backend
from howsure.datasets.questions import Question
from howsure.errors import DataError, ResumeError
from howsure.pipelines.score_job import meta_path
from howsure.stats.metrics import auroc

CHUNK_QUESTIONS = 64
VERBAL_TOKENS = 8


@dataclass
class QASettings:
    """What decides a run's records (all recorded in the meta file)."""

    estimators: Sequence[str] = ("token", "p_true", "verbal")
    samples: int = 0
    temperature: float = 1.0
    seed: int = 0
    prompt: Prompt = field(default_factory=Prompt)
    verbal_prompt: Prompt = est.VERBAL_PROMPT
    f1_threshold: float = 0.5
    hidden_at: str = "answer"

    def check(self) -> None:
        for group in self.estimators:
            if group not in est.ESTIMATOR_GROUPS:
                raise DataError(f"estimator {group!r} is not one of {', '.join(est.ESTIMATOR_GROUPS)}")
        needs = [g for g in self.estimators if g in est.SAMPLING_GROUPS]
        if needs and self.samples < 2:
            raise DataError(f"estimator {needs[0]!r} needs k >= 2 samples per question, got --samples "
                            f"{self.samples}; pass --samples 2 or more (5 is usual)")
        if self.hidden_at not in HIDDEN_AT:
            raise DataError(f"hidden position {self.hidden_at!r} is not one of {', '.join(HIDDEN_AT)}")
        # Checked here, before anything is written: the generator would refuse them only after
        # the output's sidecar recorded them, and that sidecar would then block the fixed rerun.
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 0:
            raise DataError(f"--samples must be a whole number >= 0, got {self.samples!r}")
        if self.samples and not (isinstance(self.temperature, (int, float)) and self.temperature > 0):
            raise DataError(f"--temperature must be a number > 0 when sampling, got {self.temperature!r}")


@dataclass
class QASummary:
    output: Path
    total: int
    done_now: int
    already_done: int
    accuracy: float
    auroc: dict[str, float | None]
    unparsed_verbal: int
    judged_by: dict[str, int]
    hidden: Path | None = None


def run_meta(generator: AnswerGenerator, settings: QASettings, source: str, judge: AnswerJudge,
             entailment: Backend | None, save_hidden: Path | None) -> dict:
    backend = generator.backend
    adapter = scorer_adapter(backend)
    return {
        "command": "howsure qa",
        "model": backend.model_id,
        "adapter": None if adapter is None else adapter_record(adapter),
        "dtype": getattr(backend, "dtype", None),
        "input": source,
        "prompt_fingerprint": settings.prompt.fingerprint(),
        "verbal_prompt_fingerprint": settings.verbal_prompt.fingerprint(),
        "max_new_tokens": generator.max_new_tokens,
        "stop": list(generator.stop),
        "estimators": list(settings.estimators),
        "samples": settings.samples,
        "temperature": settings.temperature,
        "seed": settings.seed,
        "f1_threshold": judge.f1_threshold,
        "llm_judge": None if judge.llm is None else getattr(judge.llm, "model_id", type(judge.llm).__name__),
        "entailment": None if entailment is None else getattr(entailment, "model_id", type(entailment).__name__),
        "hidden": None if save_hidden is None else {"file": str(save_hidden), "at": settings.hidden_at},
    }


COMPARED = ("command", "model", "adapter", "dtype", "prompt_fingerprint", "verbal_prompt_fingerprint", "max_new_tokens", "stop", "estimators",
            "samples", "temperature", "seed", "f1_threshold", "llm_judge", "entailment", "hidden")


def _resume_state(output: Path, meta: dict, questions: Sequence[Question]) -> list[dict]:
    """The records already in ``output`` (a torn last line cut), checked against this run."""
    if not output.exists():
        return []
    sidecar = meta_path(output)
    again = "pass --overwrite to start again or choose another output"
    if not sidecar.exists():
        raise ResumeError(f"{output} exists but was not written by `howsure qa` (no {sidecar.name}); {again}")
    previous = json.loads(sidecar.read_text("utf-8"))
    for key in COMPARED:
        if previous.get(key) != meta.get(key):
            raise ResumeError(f"{output} was written with {key} = {previous.get(key)!r}, this run has "
                              f"{meta.get(key)!r}; {again}")
    data = output.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]
    if len(keep) != len(data):
        with open(output, "r+b") as handle:
            handle.truncate(len(keep))
    asked = {q.id: q.question for q in questions}
    records = [json.loads(line) for line in keep.decode("utf-8").splitlines() if line.strip()]
    differ = [r["id"] for r in records if asked.get(str(r["id"])) != r.get("question")]
    if differ:
        raise ResumeError(f"{output} holds answers to questions that are not this input's (ids {differ[:3]}); {again}")
    return records


def _hidden_parts(save_hidden: Path, done: int) -> Path:
    """The parts folder holding exactly the hidden rows of the first ``done`` records."""
    parts = save_hidden.with_name(save_hidden.name + ".parts")
    if not parts.exists() and save_hidden.exists() and done:
        parts.mkdir()  # a finished run joined its parts: they come back as one
        np.save(parts / f"{0:09d}.npy", np.load(save_hidden, allow_pickle=False))
    parts.mkdir(parents=True, exist_ok=True)
    for part in sorted(parts.glob("*.npy")):
        start = int(part.stem)
        rows = np.load(part, allow_pickle=False)
        if start >= done:
            part.unlink()
        elif start + len(rows) > done:  # records of this chunk were cut by a kill
            np.save(part, rows[: done - start])
    covered = sum(len(np.load(p, allow_pickle=False, mmap_mode="r")) for p in parts.glob("*.npy"))
    if covered != done:
        raise ResumeError(f"{parts} holds hidden states of {covered} question(s) but {done} are written; "
                          "pass --overwrite to start again")
    return parts


def answer_questions(
    generator: AnswerGenerator,
    questions: Sequence[Question],
    output: str | Path,
    *,
    settings: QASettings | None = None,
    judge: AnswerJudge | None = None,
    entailment: Backend | None = None,
    save_hidden: str | Path | None = None,
    source: str = "",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    chunk_questions: int = CHUNK_QUESTIONS,
) -> QASummary:
    """Answer, judge and score ``questions`` into ``output`` (JSONL), resuming when it exists.

    ``entailment``: a backend whose yes/no label scoring clusters sampled answers for semantic
    entropy (default: clusters by normalised match). ``progress(done, total)`` as chunks finish."""
    settings = settings or QASettings()
    settings.check()
    judge = judge or AnswerJudge(settings.f1_threshold)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    save_hidden = Path(save_hidden) if save_hidden is not None else None
    if save_hidden is not None and save_hidden.suffix != ".npy":
        raise DataError(f"--save-hidden {str(save_hidden)!r} must be a .npy file")
    meta = run_meta(generator, settings, source, judge, entailment, save_hidden)
    if overwrite:
        output.unlink(missing_ok=True)
        if save_hidden is not None:
            save_hidden.unlink(missing_ok=True)
            shutil.rmtree(save_hidden.with_name(save_hidden.name + ".parts"), ignore_errors=True)
    records = _resume_state(output, meta, questions)
    meta_path(output).write_text(json.dumps(meta, indent=2), "utf-8")
    parts = _hidden_parts(save_hidden, len(records)) if save_hidden is not None else None
    done_ids = {str(r["id"]) for r in records}
    todo = [q for q in questions if q.id not in done_ids]
    already = len(records)
    if progress:
        progress(already, len(questions))
    verbal = AnswerGenerator(generator.backend, max_new_tokens=VERBAL_TOKENS, stop=generator.stop,
                             batch_size=generator.batch_size) if "verbal" in settings.estimators else None
    with open(output, "a", encoding="utf-8") as handle:
        for start in range(0, len(todo), chunk_questions):
            chunk = todo[start:start + chunk_questions]
            new, hidden = _chunk(generator, verbal, chunk, settings, judge, entailment, save_hidden is not None)
            if parts is not None:
                np.save(parts / f"{len(records):09d}.npy", hidden)
            handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in new))
            handle.flush()
            os.fsync(handle.fileno())
            records.extend(new)
            if progress:
                progress(len(records), len(questions))
    if parts is not None:
        pieces = [np.load(p, allow_pickle=False) for p in sorted(parts.glob("*.npy"))]
        if pieces:
            np.save(save_hidden, np.concatenate(pieces).astype(np.float16), allow_pickle=False)
        shutil.rmtree(parts)
    return summarise(records, output, len(questions), len(todo), already, save_hidden)


def _chunk(generator, verbal, chunk, settings, judge, entailment, want_hidden):
    groups = settings.estimators
    texts = [q.question for q in chunk]
    sampled = any(g in est.SAMPLING_GROUPS for g in groups)
    answers = generator.generate(settings.prompt, texts, hidden=settings.hidden_at if want_hidden else None,
                                 samples=settings.samples if sampled else 0, temperature=settings.temperature,
                                 seed=settings.seed)
    said = [a.text for a in answers]
    verdicts = judge.judge(texts, said, [q.gold for q in chunk])
    scores: list[dict[str, float | None]] = [{} for _ in chunk]
    if "token" in groups:
        for row, answer in zip(scores, answers):
            row.update(est.token_scores(answer.token_logprobs))
    if "p_true" in groups:
        for row, value in zip(scores, est.p_true(generator.backend, texts, said)):
            row["p_true"] = value
    raw: list[str | None] = [None] * len(chunk)
    if verbal is not None:
        replies = verbal.generate(settings.verbal_prompt, [est.question_answer_text(q, a) for q, a in zip(texts, said)])
        for n, reply in enumerate(replies):
            raw[n] = f"{settings.verbal_prompt.answer_start} {reply.text}".strip()
            scores[n]["verbal"] = est.parse_confidence(raw[n])
    for n, answer in enumerate(answers):
        if "consistency" in groups:
            scores[n]["consistency"] = est.consistency(answer.text, answer.samples)
        if "semantic_entropy" in groups:
            clusters = (est.entailment_clusters(entailment, texts[n], answer.samples) if entailment is not None
                        else est.normalised_clusters(answer.samples))
            scores[n]["semantic_entropy"] = est.semantic_entropy(clusters)
    records = []
    for q, answer, verdict, row, reply in zip(chunk, answers, verdicts, scores, raw):
        record = {"id": q.id, "question": q.question, "answer": answer.text, "gold": list(q.gold),
                  "correct": verdict.correct, "judge": verdict.judge,
                  "scores": {k: None if v is None else round(float(v), 8) for k, v in row.items()},
                  "verbal_raw": reply, "finish": answer.finish,
                  "token_logprobs": [round(x, 6) for x in answer.token_logprobs]}
        if answer.samples:
            record["samples"] = answer.samples
        records.append(record)
    hidden = np.stack([a.hidden for a in answers]) if want_hidden else None
    return records, hidden


def summarise(records: list[dict], output: Path, total: int, done_now: int, already: int,
              hidden: Path | None = None) -> QASummary:
    """Accuracy, each score's AUROC against correctness (over the rows where it is not null; None
    when those rows are all right or all wrong), unparsed verbal replies, rows per judge."""
    correct = np.array([bool(r["correct"]) for r in records], dtype=float)
    names = list(dict.fromkeys(name for r in records for name in r["scores"]))
    areas: dict[str, float | None] = {}
    for name in names:
        pairs = [(c, r["scores"][name]) for c, r in zip(correct, records) if r["scores"].get(name) is not None]
        if not pairs:
            areas[name] = None
            continue
        y, s = np.array(pairs, dtype=float).T
        if name in est.RAW_SCORES:
            s = np.exp(s)  # same order, inside [0, 1] as metrics.auroc asks
        area = auroc(y, np.clip(s, 0.0, 1.0))
        areas[name] = None if math.isnan(area) else float(area)
    unparsed = sum(1 for r in records if r.get("verbal_raw") is not None and r["scores"].get("verbal") is None)
    judged: dict[str, int] = {}
    for r in records:
        judged[r["judge"]] = judged.get(r["judge"], 0) + 1
    accuracy = float(correct.mean()) if len(correct) else float("nan")
    return QASummary(output, total, done_now, already, accuracy, areas, unparsed, judged, hidden)
