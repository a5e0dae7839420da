"""Free-form answers: ``howsure qa`` (answer, judge, score) and ``howsure datasets closed-qa``
(the seeded closed-form question set)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from howsure.cli.app import command, console, err_console
from howsure.cli.datasets import datasets_app
from howsure.cli.scoring import AdapterOption, DeviceOption, DtypeOption, ModelOption, ThreadsOption, one_line_warnings, open_backend
from howsure.datasets.output import write_rows
from howsure.answers.judges import AnswerJudge
from howsure.datasets.questions import CLOSED_KINDS, closed_form_questions, read_questions


@command("qa")
def qa(
    input: Path = typer.Option(..., "--input", "-i", help="CSV, TSV, JSONL, JSON or Parquet file of questions and gold answers."),
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file, one record per question."),
    model: str = ModelOption,
    adapter: Optional[Path] = AdapterOption,
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
    samples: int = typer.Option(5, "--samples", "-k", help="Sampled answers per question (consistency, semantic entropy)."),
    estimators: str = typer.Option("token,p_true,verbal,consistency,semantic_entropy", "--estimators",
                                   help="Comma-separated: token, p_true, verbal, consistency, semantic_entropy."),
    save_hidden: Optional[Path] = typer.Option(None, "--save-hidden", help="Write hidden states (float16 .npy, "
                                               "questions x (layers+1) x hidden, output order) for probes."),
    hidden_at: str = typer.Option("answer", "--hidden-at", help="Hidden states at the last 'answer' token or the last 'prompt' token."),
    question_column: Optional[str] = typer.Option(None, help="Question column (default: question, problem or query)."),
    answer_column: Optional[str] = typer.Option(None, help="Gold answer column (default: answer, answers or gold)."),
    id_column: Optional[str] = typer.Option(None, help="Id column (default: id when present, else the row number)."),
    separator: Optional[str] = typer.Option(None, help="Split string gold answers on this into aliases (default: no split)."),
    max_new_tokens: int = typer.Option(24, help="Most tokens of one answer."),
    temperature: float = typer.Option(1.0, help="Sampling temperature of the k samples."),
    seed: int = typer.Option(0, help="Seed of the samples."),
    f1_threshold: float = typer.Option(0.5, help="Token F1 at which an answer counts as right."),
    llm_judge: bool = typer.Option(False, "--llm-judge", help="Ask the model itself (yes/no label scoring) when no rule accepts."),
    entailment: bool = typer.Option(False, "--entailment", help="Cluster samples by bidirectional entailment through the model."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start again instead of resuming an existing output."),
    batch_size: int = typer.Option(32, help="Questions per decoding batch."),
    dtype: str = DtypeOption,
    threads: Optional[int] = ThreadsOption,
    device: str = DeviceOption,
) -> None:
    """Answer every question, judge it against its gold answers and score it with every estimator.

    Resumes after an interruption: run the same command again and finished questions are not redone.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from howsure.answers.estimators import parse_estimators
    from howsure.answers.generation import AnswerGenerator
    from howsure.answers.pipeline import QASettings, answer_questions

    questions = read_questions(input, question_column=question_column, answer_column=answer_column,
                               id_column=id_column, separator=separator, limit=limit)
    settings = QASettings(estimators=parse_estimators(estimators), samples=samples, temperature=temperature,
                          seed=seed, f1_threshold=f1_threshold, hidden_at=hidden_at)
    settings.check()  # before loading the model
    backend = open_backend(model, dtype, threads, batch_size, device, adapter=str(adapter) if adapter else None)
    generator = AnswerGenerator(backend, max_new_tokens=max_new_tokens, batch_size=batch_size)
    judge = AnswerJudge(f1_threshold, backend if llm_judge else None)
    with one_line_warnings(), Progress(
        "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
        "questions", TimeRemainingColumn(), console=err_console, transient=False,
    ) as bar:
        job = bar.add_task("answering", total=len(questions))
        summary = answer_questions(
            generator, questions, output, settings=settings, judge=judge, entailment=backend if entailment else None,
            save_hidden=save_hidden, source=str(input), overwrite=overwrite,
            progress=lambda done, total: bar.update(job, completed=done, total=total),
        )
    areas = ", ".join(f"{name} {'n/a' if value is None else f'{value:.3f}'}" for name, value in summary.auroc.items())
    judged = ", ".join(f"{name} {count}" for name, count in sorted(summary.judged_by.items()))
    console.print(f"answered {summary.done_now} question(s), {summary.already_done} already done "
                  f"-> {escape(str(summary.output))}", highlight=False)
    if summary.hidden is not None:
        console.print(f"hidden states -> {escape(str(summary.hidden))}", highlight=False)
    right = round(summary.accuracy * summary.total) if summary.total else 0
    console.print(f"accuracy {summary.accuracy:.3f} ({right} of {summary.total}; judged by {judged}); "
                  f"AUROC: {areas}; unparsed verbal confidences: {summary.unparsed_verbal}", highlight=False)


@command("closed-qa", group=datasets_app)
def closed_qa(
    output: Path = typer.Option(..., "--output", "-o", help="JSONL file to write (id, question, answer list)."),
    n: int = typer.Option(400, "--n", help="Questions to generate."),
    seed: int = typer.Option(0, help="Seed; the same seed gives the same questions."),
    kinds: str = typer.Option(",".join(CLOSED_KINDS), help=f"Comma-separated kinds: {', '.join(CLOSED_KINDS)}."),
) -> None:
    """Write seeded closed-form questions (capitals, one-digit arithmetic, colours, opposites)."""
    questions = closed_form_questions(n, seed=seed, kinds=[k.strip() for k in kinds.split(",") if k.strip()])
    # A CSV cell holds the aliases as a JSON list, which `read_questions` reads back as a list.
    as_list = output.suffix.lower() == ".jsonl"
    rows = [{"id": q.id, "question": q.question, "answer": list(q.gold) if as_list else json.dumps(list(q.gold))}
            for q in questions]
    path = write_rows(rows, output, ("id", "question", "answer"))
    console.print(f"wrote {len(rows)} question(s) -> {escape(str(path))}", highlight=False)
