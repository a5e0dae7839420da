"""The training forward pass: the task's own prompt, its shared prefix run once per batch with
its keys and values read by every row (gradients flow back through them), the rows packed
without padding, the answer position's label log probabilities out (`howsure.finetune.loss`).
`bench/bench_finetune.py` times it against a plain peft loop."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from howsure.backends.labels import LabelVocabulary, build_label_vocabulary
from howsure.backends.transformers.cache import batch_prefix_cache, cache_keyword, output_cache
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.finetune.loss import label_log_masses, normalised

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


#: Most tokens packed into one sequence of a pass (a row with its verbalizer feeds never splits):
#: attention within a pack costs its length squared, so rows go into several packs run as one
#: batch rather than into one long sequence.
PACK_TOKENS = 512


def batch_log_probs(model, encoder: PromptEncoder, rows: list[EncodedRow], device: torch.device) -> torch.Tensor:
    """Label log probabilities (len(rows), n_labels) of ``rows``, in their order, with gradients:
    `batch_log_masses` normalised over the labels."""
    return normalised(batch_log_masses(model, encoder, rows, device))


def batch_log_masses(model, encoder: PromptEncoder, rows: list[EncodedRow], device: torch.device) -> torch.Tensor:
    """Log label masses (len(rows), n_labels) of ``rows``, not normalised over the labels, in
    their order, with gradients.

    No token is run twice and almost none is padding: the rows that share the prompt prefix
    are packed end to end into sequences after the prefix (run once here, with gradients, its
    keys and values read by every pack), each row attending to the prefix and causally to its
    own tokens only (a block-diagonal mask, positions continuing the prefix's); the rows that
    do not share it are packed the same way without a prefix. Multi-token verbalizers ride in
    the same pass: each row's sequences (minus their last token) follow it, attending to the
    prefix, that row and themselves. The vocabulary projection runs only where a label token is
    read."""
    groups = [[i for i, r in enumerate(rows) if r.shares_prefix], [i for i, r in enumerate(rows) if not r.shares_prefix]]
    pieces, order = [], []
    for indices, shared in zip(groups, (True, False)):
        if indices:
            pieces.append(_packed_pass(model, encoder, [rows[i].suffix for i in indices], shared, device))
            order.extend(indices)
    result = torch.cat(pieces, dim=0)
    if order == sorted(order):
        return result
    inverse = torch.empty(len(order), dtype=torch.long, device=result.device)
    inverse[torch.tensor(order, device=result.device)] = torch.arange(len(order), device=result.device)
    return result[inverse]


@dataclass
class _Pack:
    """One packed sequence: its tokens, their positions, the segment (a row, or one of its
    verbalizer feeds) of each token, and each segment's row segment (-1 for a row itself)."""

    tokens: list[int]
    positions: list[int]
    segment_of: list[int]
    parent_of: list[int]


def _pack_rows(suffixes: list[list[int]], sequences: list[tuple[int, ...]], prefix_len: int):
    """First-fit-decreasing packs of rows (each with its feeds). Returns the packs and, per row,
    its answer position and its feeds' positions, as (pack, position) pairs."""
    feed_len = sum(len(s) - 1 for s in sequences)
    capacity = max(PACK_TOKENS, max(len(s) for s in suffixes) + feed_len)
    packs: list[_Pack] = []
    answer_at: list[tuple[int, int]] = [(0, 0)] * len(suffixes)
    feeds_at: list[list[list[tuple[int, int]]]] = [[] for _ in suffixes]
    for row in sorted(range(len(suffixes)), key=lambda r: -len(suffixes[r])):
        ids = suffixes[row]
        need = len(ids) + feed_len
        number = next((n for n, p in enumerate(packs) if len(p.tokens) + need <= capacity), len(packs))
        if number == len(packs):
            packs.append(_Pack([], [], [], []))
        pack = packs[number]
        row_segment = len(pack.parent_of)
        pack.parent_of.append(-1)
        pack.tokens.extend(ids)
        pack.positions.extend(range(prefix_len, prefix_len + len(ids)))
        pack.segment_of.extend([row_segment] * len(ids))
        answer_at[row] = (number, len(pack.tokens) - 1)
        for seq in sequences:
            feed = list(seq[:-1])
            pack.parent_of.append(row_segment)
            feeds_at[row].append([(number, len(pack.tokens) + j) for j in range(len(feed))])
            pack.tokens.extend(feed)
            pack.positions.extend(range(prefix_len + len(ids), prefix_len + len(ids) + len(feed)))
            pack.segment_of.extend([len(pack.parent_of) - 1] * len(feed))
    return packs, answer_at, feeds_at


def _pack_mask(pack: _Pack, width: int, prefix_len: int) -> torch.Tensor:
    """(width, prefix_len + width) booleans, True where a query may attend: the prefix, earlier
    tokens of its own segment, and all of its row when it is a feed. Padding sees only itself
    (a query that sees nothing would give NaN, which its zero gradient cannot cancel)."""
    n = len(pack.tokens)
    segment = torch.tensor(pack.segment_of + [-2 - j for j in range(width - n)])
    parent = torch.tensor(pack.parent_of + [-1])[torch.where(segment >= 0, segment, len(pack.parent_of))]
    index = torch.arange(width)
    sees = ((segment.unsqueeze(1) == segment.unsqueeze(0)) & (index.unsqueeze(1) >= index.unsqueeze(0))) | (
        parent.unsqueeze(1) == segment.unsqueeze(0))
    return torch.cat([torch.ones((width, prefix_len), dtype=torch.bool), sees], dim=1)


def _packed_pass(model, encoder: PromptEncoder, suffixes: list[list[int]], shared: bool, device) -> torch.Tensor:
    vocab = encoder.vocab
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    # The decoder without the vocabulary projection, which runs below on the read positions only.
    decoder = base.get_decoder()
    cache_kw = cache_keyword(decoder)
    prefix_len = len(encoder.prefix_ids) if shared else 0
    sequences = vocab.all_sequences if vocab.has_sequences else []
    packs, answer_at, feeds_at = _pack_rows(suffixes, sequences, prefix_len)
    width = max(len(p.tokens) for p in packs)
    pad_id = encoder.tokenizer.pad_token_id
    pad_id = pad_id if pad_id is not None else (encoder.tokenizer.eos_token_id or 0)
    input_ids = torch.tensor([p.tokens + [pad_id] * (width - len(p.tokens)) for p in packs])
    position_ids = torch.tensor([p.positions + [prefix_len] * (width - len(p.tokens)) for p in packs])
    allowed = torch.stack([_pack_mask(p, width, prefix_len) for p in packs]).unsqueeze(1)
    cache = None
    if shared:
        # Once per batch, with gradients: the adapter changes the prefix's keys and values too.
        prefix_out = decoder(input_ids=torch.tensor([encoder.prefix_ids], device=device), use_cache=True)
        layers = [(layer.keys, layer.values) for layer in output_cache(prefix_out).layers]
        cache = batch_prefix_cache(layers, len(packs), base.config, read_only=True)
    hidden = decoder(input_ids=input_ids.to(device), attention_mask=_mask_for(base, allowed).to(device),
                     position_ids=position_ids.to(device), **{cache_kw: cache}, use_cache=False).last_hidden_state
    read = answer_at + [at for row_feeds in feeds_at for feed in row_feeds for at in feed]
    flat = torch.tensor([pack * width + position for pack, position in read], device=device)
    logits = base.get_output_embeddings()(hidden.reshape(-1, hidden.shape[-1])[flat])
    log_probs = logits.float().log_softmax(-1)
    batch = len(suffixes)
    next_log_probs = log_probs[:batch]
    sequence_log_probs = None
    if sequences:
        # Feed logits follow the answers, row by row and sequence by sequence; position j of a
        # feed predicts the sequence's token j + 1 (chain rule).
        offset = batch
        per_row = []
        for row in range(batch):
            row_columns = []
            for seq in sequences:
                total = next_log_probs[row, seq[0]]
                for j in range(1, len(seq)):
                    total = total + log_probs[offset + j - 1, seq[j]]
                offset += len(seq) - 1
                row_columns.append(total)
            per_row.append(torch.stack(row_columns))
        sequence_log_probs = torch.stack(per_row)
    return label_log_masses(next_log_probs, vocab, sequence_log_probs)


def _mask_for(base, allowed: torch.Tensor) -> torch.Tensor:
    """The 4D mask (True: may attend) in the form the model's attention takes as given: additive
    floats for eager attention, booleans for the sdpa kinds."""
    if getattr(base.config, "_attn_implementation", None) == "eager":
        return torch.zeros(allowed.shape, dtype=base.dtype).masked_fill_(~allowed, torch.finfo(base.dtype).min)
    return allowed
