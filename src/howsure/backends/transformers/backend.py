"""Backend on Hugging Face transformers: a local model directory, a GGUF file, a hub id or a preset.

Speed comes from three things, each checked against the naive one-text-at-a-time computation
(tests/test_backend_transformers.py):

* the prompt prefix shared by all texts (chat-template head, system prompt, few-shot examples,
  instruction up to ``{text}``) is run once; its key/value cache is reused by every batch;
* texts are sorted by length and batched, left-padded after the shared prefix, so padding is
  small and the answer position is the last one of every row;
* logits are computed only at the answer position (``logits_to_keep=1``): the vocabulary
  projection is a large share of a small model's work.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch

from howsure.backends.base import ProgressCallback
from howsure.core.scores import LabelScores
from howsure.backends.labels import LabelVocabulary, build_label_vocabulary, label_scores_from_probs
from howsure.backends.transformers import cpu_features, onednn
from howsure.backends.transformers.adapters import apply_adapter
from howsure.backends.transformers.attention import use_gqa_attention
from howsure.backends.transformers.cache import batch_prefix_cache, cache_keyword, output_cache
from howsure.backends.transformers.planning import (
    PAD_SHARE_WHEN_SKIPPED,
    PASS_OVERHEAD_TOKENS,
    map_concurrently,
    split_sorted,
)
from howsure.backends.transformers.precision import MixedPrecisionLinear, bf16_mlp_input_projections, packed_precision
from howsure.backends.transformers.unpadding import skip_padding
from howsure.errors import DataError, ModelError
from howsure.models import DEFAULT_MODEL, resolve_model
from howsure.core.task import Task

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "mixed": torch.float32}
"""float32: exact, the default. bfloat16: everything in bf16. mixed: the MLP blocks' input-side
projections (gate and up: two thirds of the MLP's matmul work, half of the model's) run in bf16
while their output projection, attention, norms, rotary embeddings and the residual stream stay
float32. `bench/bench_scoring.py` prints how far mixed moves label probabilities from float32 on
the 872 SST-2 dev texts and how often the argmax agrees; near ties are re-scored in float32 (``exact_ties``, on by default). bf16 rounding
depends on how texts share passes, so the agreement without the re-check varies by run."""
_SENTINEL = "\u2063HOWSURE_TEXT\u2063"


@dataclass
class _PreparedTask:
    """Everything about a task that is the same for every text: computed once, then cached."""

    prefix_ids: list[int]
    prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] | None
    vocab: LabelVocabulary


def top_two_gap(probabilities: np.ndarray) -> float:
    """How far the most probable label is ahead of the second (1.0 with a single label)."""
    if len(probabilities) < 2:
        return 1.0
    second, first = np.partition(probabilities, -2)[-2:]
    return float(first - second)


def resolve_device(device: str) -> torch.device:
    """``"auto"``: the first CUDA GPU when torch sees one, else the CPU. Anything else must be a
    device torch knows and this machine has."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise ModelError(f"device {device!r} is not one torch knows; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"device {device!r}: this torch sees no CUDA GPU (torch {torch.__version__}); "
                             "use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ModelError(f"device {device!r}: only {torch.cuda.device_count()} CUDA GPU(s) here")
    elif resolved.type != "cpu":
        raise ModelError(f"device {device!r} is not supported; use auto, cpu, cuda or cuda:N")
    return resolved




class TransformersBackend:
    """Scores texts with a causal LM loaded by transformers.

    Parameters
    ----------
    model : str
        Preset name (``smollm2-135m``), model directory, ``.gguf`` file or hub id.
    dtype : {"float32", "mixed", "bfloat16"}
        Compute precision (see `DTYPES`). bf16 is faster on CPUs with AMX-BF16, AVX512-BF16 or
        AVX-NE-CONVERT; float32 is exact. On a CPU without them bf16 would be emulated, slower
        than float32 (`bench/bench_scoring.py` prints both matmul rates on this machine), so
        mixed and bfloat16 compute in float32 there, with a
        `cpu_features.Bf16FallbackWarning` (`requested_dtype` keeps what was asked).
    threads : int, optional
        torch intra-op threads (defaults to torch's choice).
    batch_size : int
        Most texts in one forward pass (computed as `pass_workers` parts at once).
    batch_tokens : int
        Most (padded) suffix tokens in one forward pass; long texts get smaller batches.
    share_prefix : bool
        Reuse the shared prompt prefix's KV cache (turn off only to measure what it saves).
    install : bool
        pip-install a missing preset package.
    device : str
        ``"auto"`` (a CUDA GPU when torch sees one, else the CPU), ``"cpu"``, ``"cuda"`` or
        ``"cuda:N"``. Results come back as NumPy arrays on the CPU either way.
    pass_workers : int
        How many parts of each forward pass run at the same time, each on its share of torch's
        threads (see `map_concurrently`). 1 (the default) runs passes one after another on all
        threads. `bench/bench_scoring.py --methods howsure-mixed,howsure-mixed-2w` compares
        1 and 2 on this machine; the gain varies by run and machine, so it is an opt-in.
    exact_ties : float
        ``mixed`` only: texts whose top two label probabilities are closer than twice this are
        scored again in float32 (with the float32 weights, see `MixedPrecisionLinear`), so the
        predicted label is float32's whenever bf16 moved no probability by more than this.
        The default 0.01 is the bound `bench/bench_scoring.py` checks mixed against (it prints
        the largest move on the SST-2 dev texts). The re-check scores the near ties twice, and keeping
        the float32 weights costs memory unless they are pages of a float32 safetensors file
        that loading mapped anyway (the bundled model's cache). 0 turns it off.
    prepack : bool
        On the CPU, pack the linear layers' weights for oneDNN once and fuse each gated MLP's
        activation and product into its matmuls (`howsure.backends.transformers.onednn`): same results up
        to float rounding, faster (`bench/bench_scoring.py` compares it with the unpacked peers).
        False keeps
        transformers' own layers.
    adapter : str, optional
        A directory written by `howsure finetune`: its LoRA adapter is checked against this base
        model and merged into it (`howsure.backends.transformers.adapters.apply_adapter`); scoring a task
        other than the one it was trained for is a `TaskError`.
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        dtype: str = "float32",
        threads: int | None = None,
        batch_size: int = 32,
        batch_tokens: int = 4096,
        share_prefix: bool = True,
        install: bool = False,
        device: str = "auto",
        pass_workers: int = 1,
        exact_ties: float = 0.01,
        prepack: bool = True,
        adapter: str | None = None,
    ) -> None:
        if dtype not in DTYPES:
            raise ModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        if batch_size < 1 or batch_tokens < 1:
            raise ModelError(f"batch_size and batch_tokens must be >= 1, got {batch_size}, {batch_tokens}")
        self.device = resolve_device(device)
        if threads:
            torch.set_num_threads(threads)
        if isinstance(pass_workers, bool) or not isinstance(pass_workers, int) or pass_workers < 1:
            raise ModelError(f"pass_workers must be a whole number >= 1, got {pass_workers!r}")
        self.pass_workers = pass_workers
        if isinstance(exact_ties, bool) or not isinstance(exact_ties, (int, float)) or not 0 <= exact_ties < 0.5:
            raise ModelError(f"exact_ties must be a number in [0, 0.5), got {exact_ties!r}")
        self.exact_ties = float(exact_ties)
        if not isinstance(prepack, bool):
            raise ModelError(f"prepack must be True or False, got {prepack!r}")
        #: What was asked for; ``dtype`` is what runs (float32 on a CPU that would emulate bf16).
        self.requested_dtype = dtype
        if self.device.type == "cpu":
            dtype = cpu_features.cpu_dtype(dtype)
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.model_id = model
        self.dtype = dtype
        self.batch_size = batch_size
        self.batch_tokens = batch_tokens
        self.share_prefix = share_prefix
        path, gguf_file = resolve_model(model, install=install)
        extra = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, **extra)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=DTYPES[dtype], **extra)
        except (OSError, ValueError) as exc:
            raise ModelError(f"could not load model {model!r} from {path!r}: {exc}") from exc
        self.adapter = None  # a LoRA adapter, merged in before the fast paths below rewrite the layers
        if adapter is not None:

            self.model, self.adapter = apply_adapter(self.model, adapter, model)
        self.model.eval()
        self.model.to(self.device)
        self._mixed_layers: list[MixedPrecisionLinear] = []
        prepack = prepack and onednn.available(self.device)
        if dtype == "mixed":
            self._mixed_layers = bf16_mlp_input_projections(
                self.model, keep_float32=self.exact_ties > 0, packed=prepack and cpu_features.onednn_packs(torch.bfloat16))
        if prepack:
            onednn.pack_linear_layers(self.model)
            onednn.fuse_gated_mlps(self.model, packed_precision)
        # Pages of a mapped input embedding that a pass's lookups read back are handed back
        # after it (see onednn.pack_linear_layers); nothing to do for ordinary memory.
        embedding = self.model.get_input_embeddings()
        self._embedding_pages = onednn.FilePages(embedding.weight) if prepack and embedding is not None else None
        self._real_tokens = skip_padding(self.model)
        if self.device.type == "cpu":
            use_gqa_attention(self.model)
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id or 0
        self.max_positions = getattr(self.model.config, "max_position_embeddings", None)
        self._cache_kw = cache_keyword(self.model)
        self._prepared: dict[tuple[str, bool], _PreparedTask] = {}

    # ------------------------------------------------------------------ prompts
    @property
    def uses_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def prompt(self, task: Task, text: str) -> str:
        """The exact prompt string the model sees for ``text``."""
        if self.uses_chat_template:
            return self.tokenizer.apply_chat_template(
                task.messages(text), tokenize=False, add_generation_prompt=True
            )
        return task.plain_prompt(text)

    def encode(self, prompt: str) -> list[int]:
        # A chat template writes its own special tokens (BOS where the model wants one).
        return self.tokenizer.encode(prompt, add_special_tokens=not self.uses_chat_template)

    @functools.lru_cache(maxsize=65536)
    def decode_token(self, token_id: int) -> str:
        return self.tokenizer.decode([token_id])

    # ------------------------------------------------------------------ task preparation
    def prepare(self, task: Task) -> _PreparedTask:
        """Label vocabulary and shared-prefix KV cache for ``task`` (cached per task)."""
        if self.adapter is not None:
            self.adapter.check_task(task)
        key = (task.fingerprint(), self._exact)  # the prefix's cache depends on the precision
        if key in self._prepared:
            return self._prepared[key]
        rendered = self.prompt(task, _SENTINEL)
        head, _, tail = rendered.partition(_SENTINEL)
        vocab = build_label_vocabulary(task, self.tokenizer, answer_context=tail)
        # BPE may merge the last prefix token with the text's first characters, so the
        # prefix stops one token short; texts whose tokens do not start with it are run whole.
        prefix_ids = self.encode(head)[:-1] if self.share_prefix else []
        cache = None
        if prefix_ids:
            with torch.inference_mode():
                out = self.model(input_ids=torch.tensor([prefix_ids], device=self.device), use_cache=True)
            cache = [(layer.keys, layer.values) for layer in output_cache(out).layers]
        prepared = _PreparedTask(prefix_ids, cache, vocab)
        self._prepared[key] = prepared
        return prepared

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
        full_ids = [self.encode(self.prompt(task, text)) for text in texts]
        results = self._score_ids(task, full_ids, top_k=top_k, details=details, progress=progress)
        if self._mixed_layers and self.exact_ties > 0:
            close = [i for i, r in enumerate(results) if top_two_gap(r.probabilities) < 2 * self.exact_ties]
            if close:
                with self._exact_arithmetic():
                    again = self._score_ids(task, [full_ids[i] for i in close], top_k=top_k, details=details)
                for i, score in zip(close, again):
                    results[i] = score
        return results

    @property
    def _exact(self) -> bool:
        """Whether the mixed layers compute in float32 right now (see exact_ties)."""
        return bool(self._mixed_layers) and self._mixed_layers[0].exact

    @contextlib.contextmanager
    def _exact_arithmetic(self) -> Iterator[None]:
        """Mixed layers compute in float32 inside the block (`MixedPrecisionLinear`)."""
        for layer in self._mixed_layers:
            layer.exact = True
        try:
            yield
        finally:
            for layer in self._mixed_layers:
                layer.exact = False

    def _score_ids(self, task: Task, full_ids: list[list[int]], *, top_k: int, details: bool,
                   progress: ProgressCallback | None = None) -> list[LabelScores]:
        prepared = self.prepare(task)
        n_vocab = len(self.tokenizer)
        results: list[LabelScores | None] = [None] * len(full_ids)

        def run(one_pass):
            batch, suffixes, use_prefix = one_pass
            return batch, self._forward(
                suffixes,
                prepared.prefix_cache if use_prefix else None,
                len(prepared.prefix_ids) if use_prefix else 0,
                prepared.vocab,
            )

        passes = list(self._passes(prepared, full_ids))
        for batch, (probs, seq_probs) in map_concurrently(run, passes, self.pass_workers):
            # Reduced per batch: a (texts x vocabulary) array for a whole file would not fit.
            batch_scores = label_scores_from_probs(
                prepared.vocab, probs[:, :n_vocab], seq_probs, top_k=top_k, details=details,
                decode=self.decode_token,
            )
            for i, score in zip(batch, batch_scores):
                results[i] = score
            if progress:
                progress(len(batch))
        return results  # type: ignore[return-value]

    def _passes(self, prepared: _PreparedTask, full_ids: list[list[int]]):
        """Yield (indices, token suffixes, whether they continue the shared prefix) per pass:
        texts whose prompt starts with the shared prefix, then any others run whole, each kind
        sorted by length and split by `split_sorted`."""
        prefix = prepared.prefix_ids
        shared, whole = [], []
        for i, ids in enumerate(full_ids):
            if self.max_positions and len(ids) + 8 > self.max_positions:
                raise DataError(
                    f"text {i} makes a prompt of {len(ids)} tokens, more than the model's "
                    f"{self.max_positions}; shorten it"
                )
            (shared if prefix and ids[: len(prefix)] == prefix else whole).append(i)
        overhead = PASS_OVERHEAD_TOKENS  # in padded tokens; a skipped pad costs a share of one
        overhead /= PAD_SHARE_WHEN_SKIPPED if self._real_tokens.hooked else 1
        for rows, use_prefix in ((shared, True), (whole, False)):
            skip = len(prefix) if use_prefix else 0
            ordered = sorted(rows, key=lambda i: len(full_ids[i]))
            lengths = [len(full_ids[i]) - skip for i in ordered]
            for start, stop in split_sorted(lengths, self.batch_size, self.batch_tokens, overhead):
                # A pass runs as `pass_workers` interleaved parts at once (rows 0, 2, 4 ... and
                # 1, 3, 5 ...): the parts hold the activations of one pass between them and
                # take about as long as each other, so no thread waits for the other part.
                for part in range(min(self.pass_workers, stop - start)):
                    batch = ordered[start + part:stop:self.pass_workers]
                    yield batch, [full_ids[i][skip:] for i in batch], use_prefix

    def padded_batch(self, suffixes: list[list[int]], prefix_len: int):
        """Token ids left-padded after a prefix of ``prefix_len`` tokens, with their attention
        mask, positions and lengths, on the model's device (also read by `hidden`)."""
        batch, longest = len(suffixes), max(len(s) for s in suffixes)
        input_ids = torch.full((batch, longest), self.pad_id, dtype=torch.long)
        suffix_mask = torch.zeros((batch, longest), dtype=torch.long)
        lengths = torch.tensor([len(s) for s in suffixes])
        for row, ids in enumerate(suffixes):
            input_ids[row, longest - len(ids):] = torch.tensor(ids)
            suffix_mask[row, longest - len(ids):] = 1
        # Real tokens continue the prefix's positions; pads (masked out) reuse the first one.
        pads = (longest - lengths).unsqueeze(1)
        position_ids = (prefix_len + torch.arange(longest).unsqueeze(0) - pads).clamp(min=prefix_len)
        attention_mask = torch.cat([torch.ones((batch, prefix_len), dtype=torch.long), suffix_mask], 1)
        return tuple(t.to(self.device) for t in (input_ids, attention_mask, position_ids, lengths))

    def _forward(
        self,
        suffixes: list[list[int]],
        prefix_cache: list[tuple[torch.Tensor, torch.Tensor]] | None,
        prefix_len: int,
        vocab: LabelVocabulary,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One forward pass over left-padded suffixes after the shared prefix.

        Returns next-token probabilities at the answer position, shape (batch, vocab), and the
        chain-rule probabilities of the multi-token sequences, shape (batch, n_sequences).
        """
        batch = len(suffixes)
        input_ids, attention_mask, position_ids, lengths = self.padded_batch(suffixes, prefix_len)
        cache = None
        if prefix_cache is not None:
            cache = batch_prefix_cache(prefix_cache, batch, self.model.config, read_only=not vocab.has_sequences)
        with torch.inference_mode():
            # The per-token layers skip the pads, and the last layer computes its queries,
            # output and MLP at the answer position alone (see howsure.backends.transformers.unpadding).
            with self._real_tokens.only(attention_mask[:, prefix_len:], answers_only=True):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    **{self._cache_kw: cache},
                    use_cache=vocab.has_sequences,
                    logits_to_keep=1,
                )
            log_probs = out.logits[:, -1, :].float().log_softmax(-1)
            seq_probs = None
            if vocab.has_sequences:
                seq_probs = self._sequence_probs(
                    output_cache(out), attention_mask, prefix_len + lengths, log_probs, vocab
                )
        if self._embedding_pages is not None:
            self._embedding_pages.release()
        return log_probs.exp().cpu().numpy(), seq_probs

    def _sequence_probs(self, cache, attention_mask, next_positions, first_log_probs, vocab) -> np.ndarray:
        """Chain-rule probability of each multi-token sequence after each row's prompt.

        The first token's probability comes from the answer position already computed; the rest
        from one more pass that feeds the sequences (minus their last token) after the cached
        prompt, so the prompt is never recomputed.
        """
        from transformers import DynamicCache

        sequences = vocab.all_sequences
        n_seq = len(sequences)
        batch = attention_mask.shape[0]
        width = max(len(s) for s in sequences) - 1
        feed = torch.full((n_seq, width), self.pad_id, dtype=torch.long, device=self.device)
        for s, seq in enumerate(sequences):
            feed[s, : len(seq) - 1] = torch.tensor(seq[:-1], device=self.device)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        result = np.zeros((batch, n_seq), dtype=np.float64)
        rows_per_chunk = max(1, 64 // n_seq)
        for start in range(0, batch, rows_per_chunk):
            rows = torch.arange(start, min(batch, start + rows_per_chunk), device=self.device)
            chunk = len(rows)
            chunk_cache = DynamicCache(
                ddp_cache_data=[
                    (k[rows].repeat_interleave(n_seq, 0), v[rows].repeat_interleave(n_seq, 0))
                    for k, v in layers
                ],
                config=self.model.config,
            )
            mask = torch.cat(
                [attention_mask[rows].repeat_interleave(n_seq, 0),
                 torch.ones((chunk * n_seq, width), dtype=torch.long, device=self.device)],
                1,
            )
            positions = next_positions[rows].repeat_interleave(n_seq).unsqueeze(1) + torch.arange(width, device=self.device)
            out = self.model(
                input_ids=feed.repeat(chunk, 1),
                attention_mask=mask,
                position_ids=positions,
                **{self._cache_kw: chunk_cache},
                use_cache=True,
                logits_to_keep=width,
            )
            step_log_probs = out.logits.float().log_softmax(-1).view(chunk, n_seq, width, -1)
            row_index = rows.cpu().numpy()
            for s, seq in enumerate(sequences):
                total = first_log_probs[rows, seq[0]].clone()
                for j in range(1, len(seq)):
                    total += step_log_probs[:, s, j - 1, seq[j]]
                result[row_index, s] = total.exp().double().cpu().numpy()
        return result

    # ------------------------------------------------------------------ for other model runners
    def real_tokens_only(self, mask: torch.Tensor, *, answers_only: bool):
        """Context in which the hooked blocks compute only the positions ``mask`` marks real
        (pads zeroed); ``answers_only`` also limits the answer-only blocks to the last position.
        For code that runs ``self.model`` itself (`howsure.answers.generation`)."""
        return self._real_tokens.only(mask, answers_only=answers_only)

    def cache_kwargs(self, cache) -> dict:
        """The keyword arguments that hand ``cache`` (past keys and values) to ``self.model``:
        its forward's name for them differs between model classes."""
        return {self._cache_kw: cache}
