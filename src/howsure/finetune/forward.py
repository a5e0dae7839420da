"""The training forward pass: the task's own prompt, its shared prefix run once per batch with
its keys and values broadcast to every row (gradients flow back through them), the answer
position's label log probabilities out (`howsure.finetune.loss`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from howsure.backends.labels import LabelVocabulary, build_label_vocabulary
from howsure.backends.transformers.cache import batch_prefix_cache, cache_keyword, output_cache
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.finetune.loss import label_log_probs

_TEXT_MARK = "\u2063HOWSURE_FINETUNE_TEXT\u2063"


@dataclass(frozen=True)
class EncodedRow:
    """One text's prompt tokens after the shared prefix (all of them when ``shares_prefix`` is
    False: BPE merged the prefix's last token with the text)."""

    suffix: list[int]
    shares_prefix: bool


class PromptEncoder:
    """Builds prompts exactly as `TransformersBackend.prompt` and `encode` do (chat template
    when the tokenizer has one, else the plain prompt) and splits off the shared prefix."""

    def __init__(self, tokenizer, task: Task, *, share_prefix: bool = True) -> None:
        self.tokenizer = tokenizer
        self.task = task
        self.uses_chat_template = bool(getattr(tokenizer, "chat_template", None))
        head, _, tail = self.prompt(_TEXT_MARK).partition(_TEXT_MARK)
        self.vocab: LabelVocabulary = build_label_vocabulary(task, tokenizer, answer_context=tail)
        # As in the backend: the prefix stops one token short of the text, which BPE may merge.
        self.prefix_ids: list[int] = self.encode(head)[:-1] if share_prefix else []

    def prompt(self, text: str) -> str:
        if self.uses_chat_template:
            return self.tokenizer.apply_chat_template(self.task.messages(text), tokenize=False,
                                                      add_generation_prompt=True)
        return self.task.plain_prompt(text)

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt, add_special_tokens=not self.uses_chat_template)

    def rows(self, texts: list[str], max_length: int) -> list[EncodedRow]:
        """Each text's prompt tokens; a prompt longer than ``max_length`` is a `DataError`
        naming the text's position."""
        out = []
        prefix = self.prefix_ids
        for i, text in enumerate(texts):
            ids = self.encode(self.prompt(text))
            if len(ids) > max_length:
                raise DataError(f"training text {i + 1} makes a prompt of {len(ids)} tokens, more than "
                                f"max_length={max_length}; raise --max-length or shorten it")
            shares = bool(prefix) and ids[:len(prefix)] == prefix
            out.append(EncodedRow(ids[len(prefix):] if shares else ids, shares))
        return out


def batch_log_probs(model, encoder: PromptEncoder, rows: list[EncodedRow], device: torch.device) -> torch.Tensor:
    """Label log probabilities (len(rows), n_labels) of ``rows``, in their order: the rows that
    share the prompt prefix in one pass after the prefix (run once here, with gradients), the
    others in one pass of their whole prompts."""
    groups = [[i for i, r in enumerate(rows) if r.shares_prefix], [i for i, r in enumerate(rows) if not r.shares_prefix]]
    pieces, order = [], []
    for indices, shared in zip(groups, (True, False)):
        if indices:
            pieces.append(_pass(model, encoder, [rows[i].suffix for i in indices], shared, device))
            order.extend(indices)
    result = torch.cat(pieces, dim=0)
    if order == sorted(order):
        return result
    inverse = torch.empty(len(order), dtype=torch.long, device=result.device)
    inverse[torch.tensor(order, device=result.device)] = torch.arange(len(order), device=result.device)
    return result[inverse]


def _pass(model, encoder: PromptEncoder, suffixes: list[list[int]], shared: bool, device) -> torch.Tensor:
    vocab = encoder.vocab
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    cache_kw = cache_keyword(base)
    prefix_len = len(encoder.prefix_ids) if shared else 0
    batch = len(suffixes)
    longest = max(len(s) for s in suffixes)
    pad_id = encoder.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (encoder.tokenizer.eos_token_id or 0)
    input_ids = torch.full((batch, longest), pad_id, dtype=torch.long)
    suffix_mask = torch.zeros((batch, longest), dtype=torch.long)
    for row, ids in enumerate(suffixes):
        input_ids[row, longest - len(ids):] = torch.tensor(ids)
        suffix_mask[row, longest - len(ids):] = 1
    lengths = suffix_mask.sum(1)
    # Left padding: real tokens continue the prefix's positions; pads (masked) reuse the first.
    pads = (longest - lengths).unsqueeze(1)
    position_ids = (prefix_len + torch.arange(longest).unsqueeze(0) - pads).clamp(min=prefix_len)
    attention_mask = torch.cat([torch.ones((batch, prefix_len), dtype=torch.long), suffix_mask], 1)
    input_ids, attention_mask, position_ids, lengths = (t.to(device) for t in (input_ids, attention_mask,
                                                                                  position_ids, lengths))
    cache = None
    if shared:
        # Once per batch, with gradients: the adapter changes the prefix's keys and values too.
        prefix_out = model(input_ids=torch.tensor([encoder.prefix_ids], device=device), use_cache=True,
                           logits_to_keep=1)
        layers = [(layer.keys, layer.values) for layer in output_cache(prefix_out).layers]
        cache = batch_prefix_cache(layers, batch, base.config, read_only=not vocab.has_sequences)
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                **{cache_kw: cache}, use_cache=vocab.has_sequences, logits_to_keep=1)
    next_log_probs = out.logits[:, -1, :].float().log_softmax(-1)
    sequence_log_probs = None
    if vocab.has_sequences:
        sequence_log_probs = _sequence_log_probs(model, base, output_cache(out), attention_mask,
                                                 prefix_len + lengths, next_log_probs, vocab, cache_kw, pad_id)
    return label_log_probs(next_log_probs, vocab, sequence_log_probs)


def _sequence_log_probs(model, base, cache, attention_mask, next_positions, first_log_probs, vocab, cache_kw,
                        pad_id) -> torch.Tensor:
    """Chain-rule log probability of every multi-token sequence after each row's prompt, as
    `TransformersBackend._sequence_probs` computes it, with gradients: one more pass feeds
    each sequence (minus its last token) after the cached prompt."""
    from transformers import DynamicCache

    sequences = vocab.all_sequences
    n_seq = len(sequences)
    batch = attention_mask.shape[0]
    device = attention_mask.device
    width = max(len(s) for s in sequences) - 1
    feed = torch.full((n_seq, width), pad_id, dtype=torch.long, device=device)
    for s, seq in enumerate(sequences):
        feed[s, :len(seq) - 1] = torch.tensor(seq[:-1], device=device)
    repeated = DynamicCache(
        ddp_cache_data=[(layer.keys.repeat_interleave(n_seq, 0), layer.values.repeat_interleave(n_seq, 0))
                        for layer in cache.layers],
        config=base.config,
    )
    mask = torch.cat([attention_mask.repeat_interleave(n_seq, 0),
                      torch.ones((batch * n_seq, width), dtype=torch.long, device=device)], 1)
    positions = next_positions.repeat_interleave(n_seq).unsqueeze(1) + torch.arange(width, device=device)
    out = model(input_ids=feed.repeat(batch, 1), attention_mask=mask, position_ids=positions,
                **{cache_kw: repeated}, use_cache=True, logits_to_keep=width)
    steps = out.logits.float().log_softmax(-1).view(batch, n_seq, width, -1)
    columns = []
    for s, seq in enumerate(sequences):
        total = first_log_probs[:, seq[0]]
        for j in range(1, len(seq)):
            total = total + steps[:, s, j - 1, seq[j]]
        columns.append(total)
    return torch.stack(columns, dim=1)
