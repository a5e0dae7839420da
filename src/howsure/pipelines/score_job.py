"""Score a whole table into a JSONL file, resumably.

Rows are scored in chunks taken in input order and each chunk is written, in input order, and
flushed to disk before the next starts. An interrupted run therefore leaves a prefix of the
final file (at most one torn last line, which is cut on resume); running the same command again
skips the rows already written, so the finished file holds the same rows in the same order as
an uninterrupted run (values equal up to float rounding: batches may be composed differently).
A sidecar ``OUT.meta.json`` records what produced the file (the LoRA adapter too: its directory
and weight checksum, which ``howsure thresholds``/``evaluate``/``compare`` read to keep its
training items out), so a resume with another model, adapter (or none), task or ``top_k`` is
refused instead of mixing scores; so is a resume on another input: every stored
row's text must be the text of the input row with the same id (an input that only grew by
appended rows still resumes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

from howsure.backends.base import Backend
from howsure.backends.cache import adapter_record, scorer_adapter
from howsure.backends.labels import warn_if_low_label_mass
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import DataError, ResumeError
from howsure.io.texts import TextRows

CHUNK_ROWS = 256
INVALID_POLICIES = ("error", "skip")

ChunkScorer = Callable[[Task, Sequence[Sequence[str]], int], Iterable[list[LabelScores]]]
"""``(task, chunks of texts, top_k)`` -> each chunk's scores, in chunk order, as they finish
(`howsure.pipelines.ray_engine.score_chunks_on_ray` scores them on a cluster)."""


@dataclass
class ScoreSummary:
    output: Path
    total_rows: int
    scored_now: int
    already_done: int
    skipped: list[tuple[str, str]] = field(default_factory=list)  # ("row 3 (line 4)", reason)
    median_label_mass: float | None = None  # over every row of the output, resumed ones too


def meta_path(output: Path) -> Path:
    return output.with_name(output.name + ".meta.json")


def run_meta(backend: Backend, task: Task, source: str, columns: dict, top_k: int) -> dict:
    adapter = scorer_adapter(backend)
    return {
        "model": backend.model_id,
        "adapter": None if adapter is None else adapter_record(adapter),
        "dtype": getattr(backend, "dtype", None),
        "task": task.name,
        "task_fingerprint": task.fingerprint(),
        "input": source,
        "columns": columns,
        "top_k": top_k,
        "server": getattr(backend, "server", None),  # the openai backend's URL, endpoint and top k; never a key
    }


def _short(text) -> str:
    text = repr(text)
    return text if len(text) <= 60 else text[:57] + "..."


def _resume_state(output: Path, meta: dict, rows: TextRows) -> tuple[set[str], list[float]]:
    """Ids already written to ``output`` and their label masses; cuts a torn last line left by
    an interruption. Raises `ResumeError` when ``output`` was not written by this same run."""
    if not output.exists():
        return set(), []
    sidecar = meta_path(output)
    if not sidecar.exists():
        raise ResumeError(
            f"{output} exists but was not written by `howsure score` (no {sidecar.name}); "
            "choose another output or pass --overwrite"
        )
    previous = json.loads(sidecar.read_text("utf-8"))
    again = "pass --overwrite to start again or choose another output"
    # Sidecars written before top_k was recorded: the stored records' top tokens tell it.
    compared = ("model", "dtype", "task_fingerprint", "columns", "server") + (("top_k",) if "top_k" in previous else ())
    for key in compared:
        if previous.get(key) != meta.get(key):
            raise ResumeError(
                f"{output} was written with {key} = {previous.get(key)!r}, this run has "
                f"{meta.get(key)!r}; {again}"
            )
    before, now = (_adapter_words(m.get("adapter")) for m in (previous, meta))
    if _adapter_checksum(previous) != _adapter_checksum(meta):
        raise ResumeError(f"{output} was scored {before}, this run scores {now}: one file would mix two "
                          f"models' scores; {again}")
    data = output.read_bytes()
    keep = data[: data.rfind(b"\n") + 1]  # a line without its newline was torn by a kill
    if len(keep) != len(data):
        with open(output, "r+b") as handle:
            handle.truncate(len(keep))
    text_of = dict(zip(rows.ids, rows.texts))
    done: set[str] = set()
    masses: list[float] = []
    differ: list[str] = []
    for line in keep.decode("utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        ident = str(record["id"])
        if ident not in text_of:
            differ.append(f"id {ident!r} is {_short(record.get('text'))} there and not a row with text here")
        elif text_of[ident] != record.get("text"):
            differ.append(f"id {ident!r} is {_short(record.get('text'))} there and {_short(text_of[ident])} here")
        if not done and "top_k" not in previous and len(record.get("top_tokens", [])) != meta["top_k"]:
            raise ResumeError(
                f"{output} was written with top_k = {len(record.get('top_tokens', []))}, this run has "
                f"{meta['top_k']!r}; {again}"
            )
        done.add(ident)
        masses.append(float(sum(record.get("label_mass", {}).values())))
    if differ:
        raise ResumeError(
            f"{output} holds scores of {previous.get('input')!r} and this run reads {meta.get('input')!r}, "
            f"but {len(differ)} of the {len(done)} row(s) already scored are not this input's: "
            f"{'; '.join(differ[:3])}{' ...' if len(differ) > 3 else ''}; {again}"
        )
    return done, masses


def _adapter_checksum(meta: dict) -> str | None:
    return (meta.get("adapter") or {}).get("checksum")


def _adapter_words(adapter: dict | None) -> str:
    if not adapter:
        return "without an adapter"
    return f"with adapter {adapter.get('directory')!r} (checksum {str(adapter.get('checksum'))[7:23]})"


def reject_invalid_rows(rows: TextRows) -> None:
    """Raise `DataError` listing the rows with no usable text, if there are any."""
    if not rows.invalid:
        return
    listed = "; ".join(f"{rows.where(n)}: {why}" for n, why in rows.invalid[:20])
    more = f" (and {len(rows.invalid) - 20} more)" if len(rows.invalid) > 20 else ""
    raise DataError(
        f"{len(rows.invalid)} row(s) have no usable text: {listed}{more}; fix them or pass "
        "--skip-invalid to skip them (they are then listed, never silently dropped)"
    )


def score_rows(
    backend: Backend,
    task: Task,
    rows: TextRows,
    output: str | Path,
    *,
    source: str = "",
    columns: dict | None = None,
    on_invalid: str = "error",
    overwrite: bool = False,
    top_k: int = 10,
    progress: Callable[[int, int], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    score_chunks: ChunkScorer | None = None,
) -> ScoreSummary:
    """Score ``rows`` with ``backend`` into the JSONL file ``output``, resuming if it exists.

    ``progress(done, total)`` is called as rows finish. Invalid rows (empty or non-text) raise
    `DataError` listing them when ``on_invalid="error"``, and are reported in the summary when
    ``"skip"``. Warns `LowLabelMassWarning` once when the median label mass of the output's
    rows is below `LOW_LABEL_MASS`.

    Raises
    ------
    ResumeError
        ``output`` exists and was written by another model, adapter (or none), dtype, task,
        columns or ``top_k``,
        or from another input (a stored row's text is not this input's text for its id).
    """
    if on_invalid not in INVALID_POLICIES:
        raise DataError(f"on_invalid {on_invalid!r} is not one of {', '.join(INVALID_POLICIES)}")
    if on_invalid == "error":
        reject_invalid_rows(rows)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    meta = run_meta(backend, task, source, columns or {}, top_k)
    if overwrite:
        output.unlink(missing_ok=True)
    done, masses = _resume_state(output, meta, rows)
    meta_path(output).write_text(json.dumps(meta, indent=2), "utf-8")
    todo = [i for i, ident in enumerate(rows.ids) if ident not in done]
    total = len(rows.ids)
    finished = total - len(todo)
    if progress:
        progress(finished, total)
    with open(output, "a", encoding="utf-8") as handle:
        chunks = [todo[start : start + chunk_rows] for start in range(0, len(todo), chunk_rows)]
        texts = [[rows.texts[i] for i in chunk] for chunk in chunks]
        if score_chunks is None:
            scored = (backend.label_scores(task, chunk_texts, top_k=top_k) for chunk_texts in texts)
        else:
            scored = score_chunks(task, texts, top_k)
        for chunk, scores in zip(chunks, scored):
            lines = []
            for i, score in zip(chunk, scores):
                record = {"row": rows.row_numbers[i], "id": rows.ids[i], "text": rows.texts[i]}
                if rows.labels[i] is not None:
                    record["label"] = rows.labels[i]
                record.update(score.to_record())
                masses.append(float(score.label_mass.sum()))
                lines.append(json.dumps(record, ensure_ascii=False) + "\n")
            handle.write("".join(lines))
            handle.flush()
            os.fsync(handle.fileno())
            finished += len(chunk)
            if progress:
                progress(finished, total)
    median = warn_if_low_label_mass(masses, adapter=meta["adapter"] is not None)  # once, over every row
    skipped = [(rows.where(n), why) for n, why in rows.invalid]
    return ScoreSummary(output, total, len(todo), total - len(todo), skipped, median)
