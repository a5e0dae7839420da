"""Backend on an OpenAI-compatible server: OpenAI, vLLM, llama.cpp's server, Ollama, ...

``howsure score --backend openai --base-url URL --model NAME`` reads the answer position's
distribution from the server's log-probabilities instead of a local model:

* ``endpoint="chat"`` (the default): ``/chat/completions`` with the task's messages
  (`Task.messages`, the same messages the transformers backend gives its chat template; the
  server applies the model's template), one token, ``logprobs`` and ``top_logprobs``;
* ``endpoint="completions"``: ``/completions`` with the prompt rendered here (the chat template
  of ``tokenizer`` when given, else `Task.plain_prompt`). Under the ``exact`` rule each label's
  verbalizer is appended to the prompt and scored by the chain rule from the echoed prompt's
  log-probabilities (``echo`` + ``logprobs``); multi-token verbalizers are scored this way.

A server returns only its top k tokens, so each label's mass is an interval
(`howsure.backends.openai_topk`, `LabelScores.label_mass_bounds`). Requests run ``concurrency``
at a time and are retried on 429, 5xx and dropped connections (`howsure.backends.openai_http`).
The API key comes from the environment (``OPENAI_API_KEY`` or the variable named by
``api_key_env``) and is never stored on the backend, logged, or written anywhere.
"""

from __future__ import annotations

import math
import os
import warnings
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any, Sequence

import numpy as np

from howsure.backends.base import ProgressCallback
from howsure.backends.labels import LOW_LABEL_MASS, LowLabelMassWarning, continuation_text
from howsure.backends.openai_http import RetryPolicy, ServerClient
from howsure.backends.openai_topk import AnswerMatcher, scores_from_top_logprobs
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import ModelError
from howsure.models import resolve_model

ENDPOINTS = ("chat", "completions")
DEFAULT_KEY_VARIABLE = "OPENAI_API_KEY"
_IGNORED = ("dtype", "threads", "batch_size", "install", "device")
"""Options every command passes to every backend. Precision, threads and device are the
server's business: anything but their defaults is refused (`_refuse_local_settings`) rather than
silently dropped. ``batch_size`` is accepted and unused: requests carry one text each and
``concurrency`` bounds how many are in flight."""
_LOCAL_DEFAULTS = {"dtype": ("float32", None), "threads": (None,), "device": ("auto", "cpu", None)}


def _refuse_local_settings(options: dict[str, Any]) -> None:
    """`ModelError` for a ``--dtype``, ``--threads`` or ``--device`` the server would ignore:
    a user who asked for ``--dtype mixed`` should not believe the scores came from it."""
    for name, accepted in _LOCAL_DEFAULTS.items():
        value = options.get(name)
        if value not in accepted:
            raise ModelError(f"--{name} {value!r} has no effect with the openai backend: the server chooses "
                             f"its own {name}; leave --{name} at its default and set it on the server")


class OpenAIBackend:
    """Scores texts through an OpenAI-compatible server's log-probabilities.

    Parameters
    ----------
    model : str
        The model name the server serves (checked against its ``/models`` when opened).
    base_url : str
        The API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
    api_key_env : str
        Environment variable holding the API key (unset: no key is sent, as local servers
        want). A variable named explicitly must be set.
    top_logprobs : int
        How many top tokens the server returns per answer position (OpenAI allows up to 20). The
        wider, the narrower each label's interval.
    endpoint : {"chat", "completions"}
    tokenizer : str, optional
        ``completions`` only: a preset, model directory or hub id whose chat template renders
        the prompt as the transformers backend would (without one, the plain prompt).
    concurrency : int
        Requests in flight at once.
    timeout_s : float
        Per request.
    max_retries : int
        Tries after the first on 429, 5xx, timeouts and dropped connections.
    backoff_s : float
        First backoff (doubling, jittered, at most 20 s) when the server sends no Retry-After.
    """

    def __init__(self, model: str, *, base_url: str | None = None, api_key_env: str | None = None,
                 top_logprobs: int = 20, endpoint: str = "chat", tokenizer: str | None = None,
                 concurrency: int = 4, timeout_s: float = 60.0, max_retries: int = 6, backoff_s: float = 0.5,
                 adapter: str | None = None, **ignored: Any) -> None:
        unknown = sorted(set(ignored) - set(_IGNORED))
        if unknown:
            raise ModelError(f"the openai backend has no option {unknown[0]!r}")
        _refuse_local_settings(ignored)
        if adapter is not None:
            raise ModelError(f"--adapter {adapter!r}: the openai backend scores what the server serves; "
                             "load the adapter into the server (vLLM --lora-modules, llama.cpp --lora) instead")
        if not base_url:
            raise ModelError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1 or "
                             "https://api.openai.com/v1)")
        if endpoint not in ENDPOINTS:
            raise ModelError(f"endpoint {endpoint!r} is not one of {', '.join(ENDPOINTS)}")
        if isinstance(top_logprobs, bool) or not isinstance(top_logprobs, int) or top_logprobs < 1:
            raise ModelError(f"top_logprobs must be a whole number >= 1, got {top_logprobs!r}")
        if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
            raise ModelError(f"concurrency must be a whole number >= 1, got {concurrency!r}")
        if tokenizer is not None and endpoint != "completions":
            raise ModelError(f"tokenizer {tokenizer!r} renders prompts for endpoint 'completions'; the chat "
                             "endpoint leaves the template to the server")
        key_source = api_key_env or DEFAULT_KEY_VARIABLE
        if api_key_env and not os.environ.get(api_key_env):
            raise ModelError(f"--api-key-env {api_key_env!r}: that environment variable is not set")
        self.model_id = model
        self.base_url = base_url.rstrip("/")
        self.top_logprobs = top_logprobs
        self.endpoint = endpoint
        self.concurrency = concurrency
        self.dtype = None  # the server's precision is not ours to know
        self.client = ServerClient(self.base_url, os.environ.get(key_source) or None, key_source=key_source,
                                   timeout_s=timeout_s, concurrency=concurrency,
                                   retry=RetryPolicy(max_retries=max_retries, backoff_s=backoff_s))
        self.served_models = self._check_model()
        self._tokenizer = _load_tokenizer(tokenizer) if tokenizer else None
        self._echo_shift: int | None = None  # how this server aligns echoed log-probabilities
        self._warned_share = False

    # ------------------------------------------------------------------ opening
    def _check_model(self) -> list[str]:
        """The server's model ids; `ModelError` when it does not serve ``model_id``. Fails fast
        (two quick retries): a wrong URL should not wait through the scoring backoff."""
        listing = self.client.get("/models", retry=RetryPolicy(max_retries=2, backoff_s=0.2, max_backoff_s=1.0))
        data = listing.get("data") if isinstance(listing, dict) else None
        if not isinstance(data, list):
            raise ModelError(f"{self.base_url}/models did not list models ({str(listing)[:200]!r}); is --base-url "
                             "an OpenAI-compatible API?")
        ids = [str(entry.get("id")) for entry in data if isinstance(entry, dict)]
        if self.model_id not in ids:
            shown = ", ".join(repr(i) for i in ids[:20]) + (" ..." if len(ids) > 20 else "")
            raise ModelError(f"model {self.model_id!r} is not served at {self.base_url!r}; it serves: "
                             f"{shown or 'nothing'}")
        return ids

    @property
    def server(self) -> dict[str, Any]:
        """What identifies this scorer beside the model name (for run metadata); no key."""
        return {"base_url": self.base_url, "endpoint": self.endpoint, "top_logprobs": self.top_logprobs}

    # ------------------------------------------------------------------ prompts
    def prompt(self, task: Task, text: str) -> str:
        """The prompt as this backend sends it: for ``chat``, the messages (the server applies the
        model's chat template to them); for ``completions``, the exact prompt string."""
        if self.endpoint == "chat":
            return "\n".join(f"[{m['role']}] {m['content']}" for m in task.messages(text))
        if self._tokenizer is not None and getattr(self._tokenizer, "chat_template", None):
            return self._tokenizer.apply_chat_template(task.messages(text), tokenize=False, add_generation_prompt=True)
        return task.plain_prompt(text)

    # ------------------------------------------------------------------ scoring
    def label_scores(self, task: Task, texts: Sequence[str], *, top_k: int = 10, details: bool = False,
                     progress: ProgressCallback | None = None) -> list[LabelScores]:
        """Score ``texts`` against ``task``'s labels; see `howsure.backends.base.Backend`. The
        texts' requests run `concurrency` at a time; the first failure that retries did not cure
        stops the call (a `ModelError`), so the caller writes nothing of a half-scored batch."""
        results: list[LabelScores | None] = [None] * len(texts)
        shares: list[float] = []
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="howsure-openai") as pool:
            pending = {pool.submit(self._score_one, task, text, top_k, details): i for i, text in enumerate(texts)}
            while pending:
                done, _ = wait(pending, return_when=FIRST_EXCEPTION)
                for future in done:
                    index = pending.pop(future)
                    if future.exception() is not None:
                        for other in pending:
                            other.cancel()
                        raise future.exception()
                    results[index], share = future.result()
                    shares.append(share)
                    if progress:
                        progress(1)
        self._warn_if_low_share(shares)
        return results  # type: ignore[return-value]

    def _score_one(self, task: Task, text: str, top_k: int, details: bool) -> tuple[LabelScores, float]:
        if self.endpoint == "chat":
            body = {"model": self.model_id, "messages": task.messages(text), "max_tokens": 1, "temperature": 0,
                    "logprobs": True, "top_logprobs": self.top_logprobs}
            top = self._chat_top(self.client.post("/chat/completions", body))
            return scores_from_top_logprobs(AnswerMatcher.of(task, ""), top, top_k=top_k, details=details)
        prompt = self.prompt(task, text)
        if task.variant_rule == "exact":
            return self._exact_by_chain_rule(task, prompt, top_k, details)
        top = self._completion_top(self._complete(prompt, echo=False))
        return scores_from_top_logprobs(AnswerMatcher.of(task, prompt), top, top_k=top_k, details=details)

    def _complete(self, prompt: str, *, echo: bool) -> dict:
        # max_tokens=1, never 0: llama-cpp-python reads 0 as "until the context is full".
        body = {"model": self.model_id, "prompt": prompt, "max_tokens": 1, "temperature": 0,
                "logprobs": self.top_logprobs, "echo": echo}
        return self.client.post("/completions", body)

    def _no_logprobs(self, path: str) -> ModelError:
        return ModelError(f"the server at {self.base_url!r} returned no logprobs from {path} for model "
                          f"{self.model_id!r}; it must support logprobs with top_logprobs (llama-cpp-python's "
                          "server needs --logits_all true)")

    def _chat_top(self, data: Any) -> list[tuple[str, float]]:
        try:
            entries = data["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
            top = [(str(e["token"]), float(e["logprob"])) for e in entries]
        except (KeyError, IndexError, TypeError, ValueError):
            raise self._no_logprobs("/chat/completions") from None
        if not top:
            raise self._no_logprobs("/chat/completions")
        return top

    def _completion_logprobs(self, data: Any) -> dict:
        try:
            logprobs = data["choices"][0]["logprobs"]
            if not logprobs or not logprobs.get("tokens") or not logprobs.get("top_logprobs"):
                raise KeyError("logprobs")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._no_logprobs("/completions") from None
        return logprobs

    def _completion_top(self, data: Any) -> list[tuple[str, float]]:
        first = self._completion_logprobs(data)["top_logprobs"][0]
        if not isinstance(first, dict) or not first:
            raise self._no_logprobs("/completions")
        try:
            return [(str(t), float(lp)) for t, lp in first.items()]
        except (TypeError, ValueError):  # a null or a word for a logprob: as on the chat path
            raise self._no_logprobs("/completions") from None

    # ------------------------------------------------------------------ the exact rule, by the chain rule
    def _exact_by_chain_rule(self, task: Task, prompt: str, top_k: int, details: bool) -> tuple[LabelScores, float]:
        """Each label's mass: the sum over its verbalizers of the chain-rule probability of the
        verbalizer appended to the prompt (`continuation_text`), read from the echoed prompt.
        A factor the server did not return (llama-cpp-python echoes only the top k, one position
        late: see `_find_echo_shift`) is bounded by the k-th returned probability."""
        n_labels = len(task.labels)
        lower, upper = np.zeros(n_labels), np.zeros(n_labels)
        counted: dict[str, list[tuple[str, float]]] = {label: [] for label in task.labels}
        answer_top: list[tuple[str, float]] | None = None
        for j, (label, verbalizers) in enumerate(task.labels.items()):
            for verbalizer in dict.fromkeys(verbalizers):
                answer = continuation_text(prompt, verbalizer)
                data = self._complete(prompt + answer, echo=True)
                logprobs = self._completion_logprobs(data)
                positions = _answer_positions(data, logprobs, prompt + answer, answer, self.base_url)
                shift = self._find_echo_shift(prompt, logprobs, positions[0])
                low, high = _chain_bounds(logprobs, positions, shift, self.top_logprobs)
                lower[j] += low
                upper[j] += high
                counted[label].append((answer, low))
                if answer_top is None:
                    answer_top = list(logprobs["top_logprobs"][positions[0] - shift].items())
        top = sorted(((t, math.exp(lp)) for t, lp in answer_top or []), key=lambda r: -r[1])
        total = float(lower.sum())
        scores = LabelScores(
            labels=task.label_names,
            probabilities=lower / total if total > 0 else np.full(n_labels, 1.0 / n_labels),
            label_mass=lower, other_mass=max(0.0, 1.0 - total), top_tokens=top[:top_k],
            variants=counted if details else {}, label_mass_bounds=np.stack([lower, np.minimum(upper, 1.0)], axis=1),
        )
        returned = sum(p for _, p in top)
        return scores, (total / returned if returned > 0 else 0.0)

    def _find_echo_shift(self, prompt: str, logprobs: dict, first: int) -> int:
        """0 when ``top_logprobs[i]`` is the distribution that predicts token ``i`` (OpenAI's
        convention, vLLM's), 1 when it is the one after token ``i`` (llama-cpp-python 0.3 pairs
        each echoed token with the next position's logits). Found once per backend by comparing
        both candidates with the answer position's distribution from a plain completion."""
        if self._echo_shift is None:
            reference = dict(self._completion_top(self._complete(prompt, echo=False)))
            distance = []
            for shift in (0, 1):
                candidate = logprobs["top_logprobs"][first - shift] or {}
                shared = set(candidate) & set(reference)
                distance.append(sum(abs(candidate[t] - reference[t]) for t in shared) / max(1, len(shared))
                                + (len(reference) - len(shared)))
            self._echo_shift = int(np.argmin(distance))
        return self._echo_shift

    def _warn_if_low_share(self, shares: list[float]) -> None:
        if self._warned_share or not shares:
            return
        median = float(np.median(shares))
        if median < LOW_LABEL_MASS:
            self._warned_share = True
            warnings.warn(
                f"the labels hold a median {median:.3f} of the probability the server returned in its top "
                f"{self.top_logprobs} (< {LOW_LABEL_MASS}): the model mostly answers other words or the labels "
                "rank below the top k, so their intervals are wide; raise --top-logprobs or check the prompt "
                "with `howsure inspect`", LowLabelMassWarning, stacklevel=3)


def _answer_positions(data: Any, logprobs: dict, full_prompt: str, answer: str, base_url: str) -> list[int]:
    """Indices of the echoed tokens that spell ``answer``, the end of ``full_prompt``.

    Found from the end, by the token strings themselves: servers' ``text_offset`` disagree where
    the prompt holds special tokens (llama-cpp-python counts them as empty), and some echo the
    one generated token after the prompt (vLLM, OpenAI) while others do not (llama-cpp-python)."""
    tokens = [str(t) for t in logprobs["tokens"]]
    text = str(data["choices"][0].get("text") or "")
    generated = text[len(full_prompt):] if text.startswith(full_prompt) else ""
    stop = len(tokens)
    if generated and "".join(tokens).endswith(generated):
        tail = ""
        while stop > 0 and len(tail) < len(generated):
            stop -= 1
            tail = tokens[stop] + tail
        if tail != generated:
            stop = len(tokens)
    spelled, first = "", stop
    while first > 0 and len(spelled) < len(answer):
        first -= 1
        spelled = tokens[first] + spelled
    if spelled != answer or first == 0:
        raise ModelError(f"the server at {base_url!r} tokenized the answer {answer!r} together with the end of the "
                         "prompt, so its probability cannot be read apart; use the variants rule or end the "
                         "prompt in whitespace")
    return list(range(first, stop))


def _chain_bounds(logprobs: dict, positions: list[int], shift: int, k: int) -> tuple[float, float]:
    """Lower and upper chain-rule probability of the answer tokens at ``positions``."""
    low = high = 0.0
    for i in positions:
        if shift == 0 and logprobs["token_logprobs"][i] is not None:
            low += float(logprobs["token_logprobs"][i])
            high += float(logprobs["token_logprobs"][i])
            continue
        alternatives = logprobs["top_logprobs"][i - shift] or {}
        if logprobs["tokens"][i] in alternatives:
            low += float(alternatives[logprobs["tokens"][i]])
            high += float(alternatives[logprobs["tokens"][i]])
        else:  # below the top k: at most the k-th returned probability
            ranked = sorted(alternatives.values(), reverse=True)
            low = -math.inf
            high += float(ranked[min(k, len(ranked)) - 1]) if ranked else 0.0
    return math.exp(low), math.exp(high)


def _load_tokenizer(name: str):
    """The tokenizer whose chat template renders completions prompts (transformers: heavy)."""
    from transformers import AutoTokenizer

    path, gguf_file = resolve_model(name)
    try:
        return AutoTokenizer.from_pretrained(path, **({"gguf_file": gguf_file} if gguf_file else {}))
    except (OSError, ValueError) as exc:
        raise ModelError(f"could not load the tokenizer {name!r} from {path!r}: {exc}") from exc


__all__ = ["DEFAULT_KEY_VARIABLE", "ENDPOINTS", "OpenAIBackend"]

