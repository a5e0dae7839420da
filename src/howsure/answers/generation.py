"""Batched short-answer generation on the transformers backend's model.

What makes it fast, each checked against the naive way (tests/test_answers_generation.py,
bench/bench_qa.py):

* the prompt head shared by every question (chat-template head, instruction, few-shot turns) is
  run once per prompt; its key/value cache is reused by every batch (as the backend does for
  labels, `howsure.backends.transformers.backend.TransformersBackend.prepare`);
* questions are sorted by length and decoded in batches, left-padded after the shared head;
* k sampled answers per question continue the batch's prompt cache repeated k times: one
  batched decoding, the prompt is never run again.

What is returned per question: the answer text, the generated token ids and each one's
log-probability under the model (temperature 1). These are the ANSWER tokens only: no prompt
position is ever read, and a token at which a stop string appears (and everything after it), or
the end-of-turn token, is not part of the answer. The answer text is exactly the decoding of the
answer tokens, stripped.

Hidden states (for probes): ``hidden="prompt"`` gives each layer's state (embeddings first, then
every decoder layer: n_layers + 1 rows) at the last prompt token; ``hidden="answer"`` at the last
answer token (the last prompt token when the answer is empty).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from howsure.backends.transformers.backend import TransformersBackend
from howsure.backends.transformers.cache import batch_prefix_cache, output_cache
from howsure.errors import DataError, ModelError

HIDDEN_AT = ("prompt", "answer")
_SENTINEL = "\u2063HOWSURE_QUESTION\u2063"

DEFAULT_EXAMPLES = (
    ("What is the capital of Japan?", "Tokyo"),
    ("Who wrote Romeo and Juliet?", "William Shakespeare"),
    ("How many legs does a spider have?", "8"),
    ("In which year did the Second World War end?", "1945"),
)


@dataclass(frozen=True)
class Prompt:
    """A chat prompt around one text: optional system message, few-shot (user, assistant) turns,
    the instruction with ``{text}``, and ``answer_start``: text the assistant's turn begins with
    (the model continues it; the few-shot answers begin with it too). Tokenizers without a chat template get the plain form
    ``instruction\\n<answer_start or plain_answer_prefix> answer`` per turn."""

    instruction: str = "{text}"
    examples: tuple[tuple[str, str], ...] = DEFAULT_EXAMPLES
    system: str | None = "Answer with a short phrase only."
    answer_start: str = "Answer:"
    plain_answer_prefix: str = "Answer:"

    def __post_init__(self) -> None:
        if self.instruction.count("{text}") != 1:
            raise DataError(f"a prompt instruction needs {{text}} exactly once, got {self.instruction!r}")

    def render(self, text: str) -> str:
        return self.instruction.replace("{text}", text)

    def messages(self, text: str) -> list[dict[str, str]]:
        out = [{"role": "system", "content": self.system}] if self.system else []
        for question, answer in self.examples:
            out += [{"role": "user", "content": self.render(question)},
                    {"role": "assistant", "content": f"{self.answer_start} {answer}".strip()}]
        return out + [{"role": "user", "content": self.render(text)}]

    def plain(self, text: str) -> str:
        cue = self.answer_start or self.plain_answer_prefix
        parts = [self.system] if self.system else []
        parts += [f"{self.render(q)}\n{cue} {a}" for q, a in self.examples]
        parts.append(f"{self.render(text)}\n{cue}")
        return "\n\n".join(parts)

    def fingerprint(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class GeneratedAnswer:
    """One greedy answer: its text, token ids and their log-probabilities (answer tokens only),
    why it ended (``stop`` string, ``eos`` token or ``length``), the hidden states when asked
    (float16, shape (n_layers + 1, hidden)) and the sampled answers' texts when asked."""

    text: str
    token_ids: list[int]
    token_logprobs: list[float]
    finish: str
    hidden: np.ndarray | None = None
    samples: list[str] = field(default_factory=list)


@dataclass
class _Row:
    ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    done: str | None = None
    hidden: np.ndarray | None = None


class AnswerGenerator:
    """Greedy (and sampled) short answers from a `TransformersBackend`'s model and tokenizer,
    with its chat template.

    Parameters
    ----------
    backend : TransformersBackend
    max_new_tokens : int
        Most tokens of one answer.
    stop : sequence of str
        An answer ends before the first token at which one of these appears (and at the
        end-of-turn token).
    batch_size : int
        Questions per decoding batch (times k when sampling).
    """

    def __init__(self, backend: TransformersBackend, *, max_new_tokens: int = 24,
                 stop: Sequence[str] = ("\n",), batch_size: int = 32) -> None:
        if not hasattr(backend, "model") or not hasattr(backend, "tokenizer"):
            raise ModelError(f"answer generation needs the transformers backend, got {type(backend).__name__}")
        if max_new_tokens < 1 or batch_size < 1:
            raise DataError(f"max_new_tokens and batch_size must be >= 1, got {max_new_tokens}, {batch_size}")
        self.backend = backend
        self.model = backend.model
        self.tokenizer = backend.tokenizer
        self.device = backend.device
        self.max_new_tokens = max_new_tokens
        self.stop = tuple(s for s in stop if s)
        self.batch_size = batch_size
        eos = getattr(getattr(self.model, "generation_config", None), "eos_token_id", None)
        eos = set(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = frozenset(eos)
        self._prefixes: dict[str, tuple[list[int], list | None]] = {}

    # ------------------------------------------------------------------ prompts
    def prompt_text(self, prompt: Prompt, text: str) -> str:
        """The exact prompt string the model sees (the backend's chat template when it has one)."""
        if self.backend.uses_chat_template:
            return self.tokenizer.apply_chat_template(prompt.messages(text), tokenize=False,
                                                      add_generation_prompt=True) + prompt.answer_start
        return prompt.plain(text)

    def prompt_ids(self, prompt: Prompt, text: str) -> list[int]:
        return self.backend.encode(self.prompt_text(prompt, text))

    def _prefix(self, prompt: Prompt) -> tuple[list[int], list | None]:
        """The shared head's token ids and key/value cache, computed once per prompt. Like the
        backend's, it stops one token short: BPE may merge its last token with the text's first."""
        key = prompt.fingerprint()
        if key not in self._prefixes:
            head = self.prompt_text(prompt, _SENTINEL).partition(_SENTINEL)[0]
            ids = self.backend.encode(head)[:-1] if self.backend.share_prefix else []
            cache = None
            if ids:
                with torch.inference_mode():
                    out = self.model(input_ids=torch.tensor([ids], device=self.device), use_cache=True)
                cache = [(layer.keys, layer.values) for layer in output_cache(out).layers]
            self._prefixes[key] = (ids, cache)
        return self._prefixes[key]

    # ------------------------------------------------------------------ generation
    def generate(
        self,
        prompt: Prompt,
        texts: Sequence[str],
        *,
        hidden: str | None = None,
        samples: int = 0,
        temperature: float = 1.0,
        seed: int = 0,
        progress: Callable[[int], None] | None = None,
    ) -> list[GeneratedAnswer]:
        """One `GeneratedAnswer` per text, in input order. ``samples`` > 0 also draws that many
        answers per text at ``temperature`` from the same prompt cache (`GeneratedAnswer.samples`);
        the draws are seeded by ``seed`` and the batch, so a run repeats itself."""
        if hidden is not None and hidden not in HIDDEN_AT:
            raise DataError(f"hidden {hidden!r} is not one of {', '.join(HIDDEN_AT)}")
        if samples < 0 or (samples and not temperature > 0):
            raise DataError(f"samples must be >= 0 and temperature > 0, got {samples}, {temperature}")
        prefix_ids, prefix_cache = self._prefix(prompt)
        full = [self.prompt_ids(prompt, text) for text in texts]
        limit = getattr(self.model.config, "max_position_embeddings", None)
        for i, ids in enumerate(full):
            if limit and len(ids) + self.max_new_tokens + 1 > limit:
                raise DataError(f"text {i} makes a prompt of {len(ids)} tokens; with {self.max_new_tokens} "
                                f"answer tokens that is more than the model's {limit}")
        shared = [i for i, ids in enumerate(full) if prefix_ids and ids[:len(prefix_ids)] == prefix_ids]
        return self._run(full, shared, prefix_ids, prefix_cache, hidden=hidden, samples=samples,
                         temperature=temperature, seed=seed, progress=progress)

    def continue_ids(self, prompts: Sequence[Sequence[int]], *,
                     progress: Callable[[int], None] | None = None) -> list[GeneratedAnswer]:
        """Greedy continuation of each prompt given as token ids, in input order: for prompts
        that end in text of their own, such as a question's prompt followed by a fixed answer whose
        continuation is wanted (`howsure.finetune.completion_eval`). No shared head is assumed:
        each prompt is run whole, in length-sorted left-padded batches."""
        full = [list(ids) for ids in prompts]
        if any(not ids for ids in full):
            raise DataError("a prompt to continue has no tokens")
        return self._run(full, [], [], None, hidden=None, samples=0, temperature=1.0, seed=0, progress=progress)

    def _run(self, full, shared, prefix_ids, prefix_cache, *, hidden, samples, temperature, seed, progress):
        whole = sorted(set(range(len(full))) - set(shared))
        results: list[GeneratedAnswer | None] = [None] * len(full)
        for rows, use_prefix in ((shared, True), (whole, False)):
            skip = len(prefix_ids) if use_prefix else 0
            ordered = sorted(rows, key=lambda i: len(full[i]))
            for start in range(0, len(ordered), self.batch_size):
                batch = ordered[start:start + self.batch_size]
                answers = self._batch([full[i][skip:] for i in batch], prefix_cache if use_prefix else None, skip,
                                      hidden=hidden, samples=samples, temperature=temperature,
                                      seed=seed * 1_000_003 + batch[0])
                for i, answer in zip(batch, answers):
                    results[i] = answer
                if progress:
                    progress(len(batch))
        return results  # type: ignore[return-value]

    def _prompt_pass(self, suffixes, prefix_cache, prefix_len, hidden: bool):
        """Run the left-padded prompt suffixes after the shared head: last-position log-probs,
        the cache, the attention mask, each row's next position, the last token's hidden states."""
        batch, longest = len(suffixes), max(len(s) for s in suffixes)
        input_ids = torch.full((batch, longest), self.backend.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, longest), dtype=torch.long)
        for row, ids in enumerate(suffixes):
            input_ids[row, longest - len(ids):] = torch.tensor(ids)
            mask[row, longest - len(ids):] = 1
        lengths = torch.tensor([len(s) for s in suffixes])
        pads = (longest - lengths).unsqueeze(1)
        positions = (prefix_len + torch.arange(longest).unsqueeze(0) - pads).clamp(min=prefix_len)
        attention = torch.cat([torch.ones((batch, prefix_len), dtype=torch.long), mask], 1)
        input_ids, attention, positions = (t.to(self.device) for t in (input_ids, attention, positions))
        cache = None
        if prefix_cache is not None:
            cache = batch_prefix_cache(prefix_cache, batch, self.model.config, read_only=False)
        with self.backend.real_tokens_only(attention[:, prefix_len:], answers_only=not hidden):
            out = self.model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                             **self.backend.cache_kwargs(cache), use_cache=True, logits_to_keep=1,
                             output_hidden_states=hidden)
        states = _last_states(out) if hidden else None
        next_positions = (prefix_len + lengths).to(self.device)
        return out.logits[:, -1, :].float().log_softmax(-1), output_cache(out), attention, next_positions, states

    def _batch(self, suffixes, prefix_cache, prefix_len, *, hidden, samples, temperature, seed):
        from transformers import DynamicCache

        with torch.inference_mode():
            log_probs, cache, attention, positions, states = self._prompt_pass(
                suffixes, prefix_cache, prefix_len, hidden is not None)
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            rows = self._decode(log_probs, cache, attention, positions, greedy=True,
                                hidden_at_answer=hidden == "answer", prompt_states=states)
            sampled: list[list[str]] = [[] for _ in suffixes]
            if samples:
                repeated = DynamicCache(ddp_cache_data=[(k.repeat_interleave(samples, 0), v.repeat_interleave(samples, 0))
                                                        for k, v in layers], config=self.model.config)
                generator = torch.Generator(device=self.device).manual_seed(seed)
                drawn = self._decode(log_probs.repeat_interleave(samples, 0), repeated,
                                     attention.repeat_interleave(samples, 0), positions.repeat_interleave(samples, 0),
                                     greedy=False, temperature=temperature, generator=generator)
                for n, row in enumerate(drawn):
                    sampled[n // samples].append(self._text(row.ids))
        out = []
        for n, row in enumerate(rows):
            if hidden == "prompt":
                row.hidden = states[n]
            out.append(GeneratedAnswer(self._text(row.ids), row.ids, row.logprobs, row.done or "length",
                                       row.hidden, sampled[n]))
        return out

    def _text(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def _decode(self, log_probs, cache, attention, positions, *, greedy: bool, temperature: float = 1.0,
                generator=None, hidden_at_answer: bool = False, prompt_states=None) -> list[_Row]:
        """Continue every row of ``cache`` token by token until each one stops (a row that stops
        leaves the batch). Pass j feeds the
        token chosen at pass j - 1 (pass 0 is the prompt's), so the state at an answer's last
        token comes from the pass that chose what follows it; an answer cut by the length limit
        gets one more pass for it when ``hidden_at_answer``."""
        from transformers import DynamicCache

        rows = [_Row() for _ in range(log_probs.shape[0])]
        active = list(range(len(rows)))  # the rows still decoding: row active[n] is tensor row n
        current = prompt_states
        for step in range(self.max_new_tokens + 1):
            if step == self.max_new_tokens:
                if hidden_at_answer:
                    for n, r in enumerate(active):
                        rows[r].done, rows[r].hidden = "length", current[n]
                break
            if greedy:
                chosen = log_probs.argmax(-1)
            else:
                chosen = torch.multinomial((log_probs / temperature).softmax(-1), 1, generator=generator).squeeze(1)
            picked = log_probs.gather(1, chosen.unsqueeze(1)).squeeze(1).tolist()
            for n, (token, logprob) in enumerate(zip(chosen.tolist(), picked)):
                row = rows[active[n]]
                reason = self._stops(row.ids, token)
                if reason:
                    row.done = reason
                    if hidden_at_answer:
                        row.hidden = current[n]
                else:
                    row.ids.append(token)
                    row.logprobs.append(float(logprob))
                    if not hidden_at_answer and len(row.ids) == self.max_new_tokens:
                        row.done = "length"
            keep = [n for n, r in enumerate(active) if rows[r].done is None]
            if not keep:
                break
            if len(keep) < len(active):
                # Finished rows leave the batch: most answers are a few tokens, and every later
                # pass would otherwise compute them all again.
                index = torch.tensor(keep, device=chosen.device)
                chosen, attention, positions = chosen[index], attention[index], positions[index]
                cache = DynamicCache(ddp_cache_data=[(layer.keys[index], layer.values[index]) for layer in cache.layers],
                                     config=self.model.config)
                if current is not None:
                    current = current[keep]
                active = [active[n] for n in keep]
            attention = torch.cat([attention, torch.ones((len(active), 1), dtype=attention.dtype,
                                                         device=attention.device)], 1)
            out = self.model(input_ids=chosen.unsqueeze(1), attention_mask=attention,
                             position_ids=(positions + step).unsqueeze(1), **self.backend.cache_kwargs(cache),
                             use_cache=True, output_hidden_states=hidden_at_answer)
            cache = output_cache(out)
            log_probs = out.logits[:, -1, :].float().log_softmax(-1)
            if hidden_at_answer:
                current = _last_states(out)
        return rows

    def _stops(self, ids: list[int], token: int) -> str | None:
        """Why ``token`` after ``ids`` ends the answer, if it does."""
        if token in self.eos_ids:
            return "eos"
        if self.stop:
            text = self.tokenizer.decode(ids + [token], skip_special_tokens=True)
            if any(s in text for s in self.stop):
                return "stop"
        return None

    # ------------------------------------------------------------------ teacher forcing
    def answer_logprobs(self, prompt: Prompt, texts: Sequence[str], answers: Sequence[Sequence[int]]) -> list[list[float]]:
        """Log-probability of each given answer token after its prompt, one full pass per text:
        the model's logits at position ``len(prompt) - 1 + j`` for answer token j, and no other
        position (the check that generation reads answer positions only)."""
        out = []
        with torch.inference_mode():
            for text, answer in zip(texts, answers):
                ids = self.prompt_ids(prompt, text)
                full = torch.tensor([ids + list(answer)], device=self.device)
                logits = self.model(input_ids=full).logits[0].float().log_softmax(-1)
                positions = torch.arange(len(ids) - 1, len(ids) - 1 + len(answer), device=self.device)
                out.append(logits[positions, torch.tensor(list(answer), dtype=torch.long, device=self.device)].tolist())
        return out


def _last_states(out) -> np.ndarray:
    """(batch, n_layers + 1, hidden) float16: every layer's state at each row's last position."""
    return torch.stack([h[:, -1, :] for h in out.hidden_states], 1).to(torch.float16).cpu().numpy()
