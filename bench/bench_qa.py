"""Answer generation speed of `howsure qa` against one transformers ``generate()`` call per
question (the naive method), side by side in one run: the same loaded model, the same prompts
(the default few-shot `Prompt`), greedy decoding, the same stop rule (a newline or the end of
the turn) and the same length limit.

* howsure: the shared prompt head (system message, few-shot turns) run once, its key/value cache
  reused by every batch; questions sorted by length and decoded in batches
  (`howsure.answers.generation.AnswerGenerator`);
* naive: ``model.generate(prompt_ids, do_sample=False, stop_strings=["\\n"])`` per question.

Prints questions per second of each, their ratio, and how many answers agree (they should all:
both are greedy on the same model; a batch's float rounding may flip a near tie).

    python bench/bench_qa.py                   # 64 closed-form questions, 2 threads
    python bench/bench_qa.py --questions 16    # a quick look
    python bench/bench_qa.py --input ../shared/data/qa/nq_open_dev.jsonl --questions 64
"""

from __future__ import annotations

import argparse
import time

import torch

from howsure.answers.generation import AnswerGenerator, Prompt
from howsure.backends import load_backend
from howsure.datasets.questions import closed_form_questions, read_questions


def naive(generator: AnswerGenerator, prompt: Prompt, texts: list[str], max_new_tokens: int) -> list[str]:
    model, tokenizer = generator.model, generator.tokenizer
    answers = []
    with torch.inference_mode():
        for text in texts:
            ids = torch.tensor([generator.prompt_ids(prompt, text)])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                 do_sample=False, stop_strings=list(generator.stop), tokenizer=tokenizer,
                                 pad_token_id=generator.backend.pad_id)
            answer = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
            answers.append(answer.split("\n")[0].strip())
    return answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--input", default=None, help="question file (default: seeded closed-form questions)")
    parser.add_argument("--questions", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    args = parser.parse_args()
    questions = (read_questions(args.input, limit=args.questions) if args.input
                 else closed_form_questions(args.questions, seed=0))
    texts = [q.question for q in questions]
    backend = load_backend(args.model, threads=args.threads)
    generator = AnswerGenerator(backend, max_new_tokens=args.max_new_tokens, batch_size=args.batch_size)
    prompt = Prompt()
    generator.generate(prompt, texts[:2])  # warm-up: the shared head's cache, first-call costs
    naive(generator, prompt, texts[:2], args.max_new_tokens)

    start = time.perf_counter()
    ours = [a.text for a in generator.generate(prompt, texts)]
    ours_s = time.perf_counter() - start
    start = time.perf_counter()
    theirs = naive(generator, prompt, texts, args.max_new_tokens)
    theirs_s = time.perf_counter() - start

    agree = sum(a == b for a, b in zip(ours, theirs))
    print(f"model {args.model}, {len(texts)} questions, {args.threads} threads, batch {args.batch_size}, "
          f"at most {args.max_new_tokens} answer tokens")
    print(f"howsure qa generation : {len(texts) / ours_s:7.2f} questions/s ({ours_s:.1f} s)")
    print(f"generate() per question: {len(texts) / theirs_s:7.2f} questions/s ({theirs_s:.1f} s)")
    print(f"ratio                  : {theirs_s / ours_s:7.2f}x")
    print(f"same answers           : {agree} of {len(texts)}")


if __name__ == "__main__":
    main()
