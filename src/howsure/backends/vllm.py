"""Backend on vLLM's offline engine (GPU machines): the same label scores from vLLM's logprobs.

vLLM returns log-probabilities, never a whole next-token distribution, so each text takes:

1. one request for the prompt with ``SamplingParams(max_tokens=1, logprobs=k)``: the top ``k``
   next tokens at the answer position (the report's top tokens, and every label token among
   them, exactly);
2. one request per label token outside those ``k`` and per multi-token verbalizer: the prompt
   with the tokens appended, ``prompt_logprobs=0``, whose logprob of each appended token (vLLM
   always reports the token that is there) gives the chain-rule probability.

The label masses are then exact, not bounded, and `backends.labels.label_scores_from_probs`
turns them into `LabelScores` as for every backend. ``enable_prefix_caching`` lets the requests
of one text, and the shared task prefix of all texts, reuse computed blocks.

Import-guarded: this module imports without vLLM; building the backend without it is a
`ModelError` saying how to install it. `label_scores_from_vllm` is the conversion, tested
without vLLM against the transformers backend (tests/test_backend_vllm.py); `bench/bench_vllm.py`
compares the two on a GPU.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from howsure.backends.base import ProgressCallback
from howsure.backends.labels import LabelVocabulary, build_label_vocabulary, label_scores_from_probs
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import ModelError
from howsure.models import DEFAULT_MODEL, resolve_model

INSTALL_VLLM = ("--backend vllm needs vLLM, which is not installed; on a Linux machine with a CUDA GPU run "
                "`pip install vllm` in an environment of its own (it brings its own CUDA build of torch)")
#: Next tokens asked for per text (vLLM's default ``max_logprobs`` is 20).
NEXT_LOGPROBS = 20
DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}
_SENTINEL = "\u2063HOWSURE_TEXT\u2063"

LogprobMap = Mapping[int, Any]
"""One position's logprobs as vLLM gives them: token id -> an object with ``.logprob``."""


def prompt_text(tokenizer, task: Task, text: str) -> str:
    """The prompt the transformers backend builds: the chat template when the tokenizer has one."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(task.messages(text), tokenize=False, add_generation_prompt=True)
    return task.plain_prompt(text)


def prompt_ids(tokenizer, task: Task, text: str) -> list[int]:
    # A chat template writes its own special tokens (BOS where the model wants one).
    return tokenizer.encode(prompt_text(tokenizer, task, text),
                            add_special_tokens=not getattr(tokenizer, "chat_template", None))


def task_vocabulary(tokenizer, task: Task) -> LabelVocabulary:
    """The label tokens as the transformers backend reads them (the prompt's end is the context
    the ``exact`` rule tokenizes a verbalizer after)."""
    tail = prompt_text(tokenizer, task, _SENTINEL).partition(_SENTINEL)[2]
    return build_label_vocabulary(task, tokenizer, answer_context=tail)


def extra_requests(vocab: LabelVocabulary, next_logprobs: LogprobMap) -> list[tuple[int, ...]]:
    """Token sequences to append to a prompt for ``prompt_logprobs``: each label token not among
    the next tokens already returned, then every multi-token verbalizer."""
    missing = [(int(t),) for ids in vocab.token_ids for t in ids if int(t) not in next_logprobs]
    return missing + list(vocab.all_sequences)


def appended_logprob(prompt_logprobs: Sequence[LogprobMap | None], prompt_len: int, appended: Sequence[int]) -> float:
    """Chain-rule log-probability of ``appended`` after the first ``prompt_len`` tokens, from the
    ``prompt_logprobs`` of the request prompt + appended (position i: the logprob of token i)."""
    total = 0.0
    for offset, token in enumerate(appended):
        position = prompt_logprobs[prompt_len + offset]
        if position is None or token not in position:
            raise ModelError(f"vLLM returned no prompt logprob for token {token} at position {prompt_len + offset}")
        total += float(position[token].logprob)
    return total


def label_scores_from_vllm(
    vocab: LabelVocabulary,
    n_vocab: int,
    next_logprobs: Sequence[LogprobMap],
    extra_logprobs: Sequence[Mapping[tuple[int, ...], float]],
    *,
    top_k: int = 10,
    details: bool = False,
    decode=None,
) -> list[LabelScores]:
    """`LabelScores` from what vLLM returned per text: ``next_logprobs`` (the answer position's
    top tokens) and ``extra_logprobs`` (appended sequence -> its chain-rule logprob, see
    `extra_requests`). Tokens vLLM did not return count 0 in the next-token row: every label
    token is in one of the two, and ``top_k`` must not exceed the tokens returned."""
    n_texts = len(next_logprobs)
    next_probs = np.zeros((n_texts, n_vocab), dtype=np.float64)
    sequences = vocab.all_sequences
    sequence_probs = np.zeros((n_texts, len(sequences)), dtype=np.float64)
    for i, (returned, extra) in enumerate(zip(next_logprobs, extra_logprobs)):
        if len(returned) < min(top_k, n_vocab):
            raise ModelError(f"vLLM returned {len(returned)} next-token logprobs, fewer than top_k = {top_k}")
        for token, logprob in returned.items():
            if int(token) < n_vocab:  # ids past the tokenizer are the embedding's padding, as in transformers
                next_probs[i, int(token)] = math.exp(float(logprob.logprob))
        for appended, logprob in extra.items():
            if len(appended) == 1:
                next_probs[i, appended[0]] = math.exp(logprob)
        for s, seq in enumerate(sequences):
            sequence_probs[i, s] = math.exp(extra[seq])
    return label_scores_from_probs(vocab, next_probs, sequence_probs if sequences else None, top_k=top_k,
                                   details=details, decode=decode)


class VLLMBackend:
    """Scores texts with vLLM's offline engine (``vllm.LLM``, prefix caching on).

    Parameters
    ----------
    model : str
        Preset name (its converted safetensors copy), model directory or hub id.
    dtype : {"float32", "bfloat16", "float16"}
        What vLLM computes in.
    device : str
        ``auto`` or ``cuda``: vLLM runs on a CUDA GPU.
    gpu_memory_utilization : float
        vLLM's share of the GPU's memory for weights and cache.
    next_logprobs : int
        Next tokens requested per text (at most the engine's ``max_logprobs``).
    threads, batch_size, install, adapter
        As every backend gets them: threads and batch size are vLLM's business (ignored);
        ``install`` installs a missing preset; an adapter is refused (not supported here yet).
    """

    def __init__(self, model: str = DEFAULT_MODEL, *, dtype: str = "float32", device: str = "auto",
                 threads: int | None = None, batch_size: int = 32, install: bool = False,
                 adapter: str | None = None, gpu_memory_utilization: float = 0.5,
                 next_logprobs: int = NEXT_LOGPROBS) -> None:
        try:
            import vllm
        except ImportError:
            raise ModelError(INSTALL_VLLM) from None
        if dtype not in DTYPES:
            raise ModelError(f"--backend vllm: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if device not in ("auto", "cuda") and not device.startswith("cuda:"):
            raise ModelError(f"--backend vllm runs on a CUDA GPU; device {device!r} is not one (use auto or cuda)")
        if adapter is not None:
            raise ModelError("--backend vllm does not load --adapter yet; merge it with `howsure finetune` "
                             "output into a model directory or use --backend transformers")
        path, gguf_file = resolve_model(model, install=install)
        if gguf_file:
            raise ModelError(f"--backend vllm takes a model directory or hub id, not the GGUF {model!r}; "
                             "use --backend llamacpp or transformers for GGUF files")
        self.model_id = model
        self.dtype = dtype
        self.next_logprobs = next_logprobs
        try:
            self.llm = vllm.LLM(model=path, dtype=DTYPES[dtype], enable_prefix_caching=True,
                                gpu_memory_utilization=gpu_memory_utilization, max_logprobs=next_logprobs)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelError(f"vLLM could not load model {model!r} from {path!r}: {exc}") from exc
        self._sampling = vllm.SamplingParams
        self.tokenizer = self.llm.get_tokenizer()
        self._vocab: dict[str, LabelVocabulary] = {}

    def prompt(self, task: Task, text: str) -> str:
        return prompt_text(self.tokenizer, task, text)

    @functools.lru_cache(maxsize=65536)
    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    def vocabulary(self, task: Task) -> LabelVocabulary:
        key = task.fingerprint()
        if key not in self._vocab:
            self._vocab[key] = task_vocabulary(self.tokenizer, task)
        return self._vocab[key]

    def label_scores(self, task: Task, texts: Sequence[str], *, top_k: int = 10, details: bool = False,
                     progress: ProgressCallback | None = None) -> list[LabelScores]:
        """Score ``texts`` against ``task``'s labels; see `howsure.backends.base.Backend`."""
        if top_k > self.next_logprobs:
            raise ModelError(f"top_k = {top_k} is more than the {self.next_logprobs} next tokens vLLM is asked for")
        vocab = self.vocabulary(task)
        ids = [prompt_ids(self.tokenizer, task, text) for text in texts]
        first = self.llm.generate([{"prompt_token_ids": p} for p in ids],
                                  self._sampling(max_tokens=1, temperature=0.0, logprobs=self.next_logprobs),
                                  use_tqdm=False)
        next_logprobs = [out.outputs[0].logprobs[0] for out in first]
        wanted = [extra_requests(vocab, returned) for returned in next_logprobs]
        requests = [(i, seq) for i, seqs in enumerate(wanted) for seq in seqs]
        extra: list[dict[tuple[int, ...], float]] = [{} for _ in texts]
        if requests:
            outs = self.llm.generate([{"prompt_token_ids": ids[i] + list(seq)} for i, seq in requests],
                                     self._sampling(max_tokens=1, temperature=0.0, prompt_logprobs=0),
                                     use_tqdm=False)
            for (i, seq), out in zip(requests, outs):
                extra[i][seq] = appended_logprob(out.prompt_logprobs, len(ids[i]), seq)
        scores = label_scores_from_vllm(vocab, len(self.tokenizer), next_logprobs, extra, top_k=top_k,
                                        details=details, decode=self.decode_token)
        if progress:
            progress(len(texts))
        return scores


__all__ = ["INSTALL_VLLM", "VLLMBackend", "appended_logprob", "extra_requests", "label_scores_from_vllm",
           "prompt_ids", "prompt_text", "task_vocabulary"]
