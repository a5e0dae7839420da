"""From a next-token distribution to a label distribution.

`LabelVocabulary` decides, once per tokenizer and task, which tokens (and token sequences) count
for which label. `label_scores_from_probs` turns next-token probabilities at the answer position
(plus, for multi-token verbalizers, the chain-rule probabilities of the remaining tokens) into
`LabelScores`. Nothing here runs a model, so every backend that can give next-token
probabilities shares it.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from howsure.core.scores import LabelScores
from howsure.core.task import Task, normalize_answer
from howsure.errors import TaskError

#: Below this median share of probability on the labels, the prompt is probably not working.
LOW_LABEL_MASS = 0.05
#: Below this share on the labels for one text, `howsure inspect` notes that the model mostly
#: wants to say something else.
INSPECT_LOW_LABEL_MASS = 0.25


class LowLabelMassWarning(UserWarning):
    """Most of the next-token probability goes to answers that are no label."""


@dataclass
class LabelVocabulary:
    """Which token ids and token sequences count for each label.

    Attributes
    ----------
    labels : list[str]
    token_ids : list[ndarray]
        Per label, the single token ids whose probability is added to it.
    sequences : list[list[tuple[int, ...]]]
        Per label, token sequences of length >= 2 (multi-token verbalizers), each scored by the
        chain rule after the prompt.
    token_strings : dict[int, str]
        Decoded form of every counted token, for reports.
    """

    labels: list[str]
    token_ids: list[np.ndarray]
    sequences: list[list[tuple[int, ...]]]
    token_strings: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def all_sequences(self) -> list[tuple[int, ...]]:
        """Every multi-token sequence, in a fixed order (label by label)."""
        return [seq for per_label in self.sequences for seq in per_label]

    @property
    def has_sequences(self) -> bool:
        return any(self.sequences)


@functools.lru_cache(maxsize=8)
def _normalized_vocabulary(tokenizer) -> dict[str, list[int]]:
    """normalize_answer(decoded token) -> token ids, for every non-special token."""
    special = set(tokenizer.all_special_ids)
    size = len(tokenizer)
    decoded = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
    table: dict[str, list[int]] = {}
    for token_id, text in enumerate(decoded):
        if token_id in special or "\ufffd" in text:  # specials and partial UTF-8 bytes never match
            continue
        table.setdefault(normalize_answer(text), []).append(token_id)
    return table


def surface_forms(verbalizer: str) -> list[str]:
    """Spellings of a verbalizer a model may produce at the start of its answer."""
    forms = []
    for base in (verbalizer, verbalizer.lower(), verbalizer.capitalize(), verbalizer.upper(), verbalizer.title()):
        for spaced in (base, " " + base):
            if spaced not in forms:
                forms.append(spaced)
    return forms


def build_label_vocabulary(task: Task, tokenizer, answer_context: str = "") -> LabelVocabulary:
    """Map the task's labels to token ids and sequences for ``tokenizer``.

    Parameters
    ----------
    task : Task
    tokenizer : transformers tokenizer
    answer_context : str
        The end of the prompt that the answer follows (used by the ``exact`` rule to tokenize a
        verbalizer exactly as the model would continue the prompt).
    """
    unk = tokenizer.unk_token_id
    token_ids: list[np.ndarray] = []
    sequences: list[list[tuple[int, ...]]] = []
    strings: dict[int, str] = {}
    notes: list[str] = []
    table = _normalized_vocabulary(tokenizer) if task.variant_rule == "variants" else {}
    for label, verbalizers in task.labels.items():
        ids: list[int] = []
        seqs: list[tuple[int, ...]] = []
        for verbalizer in verbalizers:
            if task.variant_rule == "variants":
                matched = table.get(normalize_answer(verbalizer), [])
                if matched:
                    ids.extend(matched)
                    continue
                candidates = [_encode(tokenizer, form) for form in surface_forms(verbalizer)]
            else:
                candidates = [_continuation(tokenizer, answer_context, verbalizer)]
            for seq in candidates:
                if unk is not None and unk in seq:
                    raise TaskError(
                        f"label {label!r}: verbalizer {verbalizer!r} has no token in this vocabulary "
                        f"(it encodes to the unknown token); verbalizers tried: {list(verbalizers)}"
                    )
                if len(seq) == 1:
                    ids.append(seq[0])
                elif len(seq) > 1 and seq not in seqs:
                    seqs.append(seq)
        if not ids and not seqs:
            raise TaskError(
                f"label {label!r} has no token in this vocabulary; verbalizers tried: {list(verbalizers)}"
            )
        unique_ids = np.array(sorted(set(ids)), dtype=np.int64)
        for token_id in unique_ids:
            strings[int(token_id)] = tokenizer.decode([int(token_id)])
        token_ids.append(unique_ids)
        sequences.append(seqs)
    # A sequence starting with another label's single token is counted twice over: say so.
    for i, per_label in enumerate(sequences):
        for seq in per_label:
            for j, ids in enumerate(token_ids):
                if j != i and seq[0] in set(ids.tolist()):
                    notes.append(
                        f"label {task.label_names[i]!r}: sequence {tokenizer.decode(list(seq))!r} starts "
                        f"with {tokenizer.decode([seq[0]])!r}, a token of label {task.label_names[j]!r}"
                    )
    return LabelVocabulary(task.label_names, token_ids, sequences, strings, notes)


def _encode(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def continuation_text(context: str, verbalizer: str) -> str:
    """How ``verbalizer`` is written after ``context`` under the ``exact`` rule: a space between
    them unless the context is empty or already ends in whitespace."""
    return verbalizer if (not context or context[-1].isspace()) else " " + verbalizer


def _continuation(tokenizer, context: str, verbalizer: str) -> tuple[int, ...]:
    """Tokens of ``verbalizer`` as they follow ``context`` (lm-evaluation-harness's split):
    encode(context + answer) minus encode(context). A space separates them unless the context
    already ends in whitespace."""
    answer = continuation_text(context, verbalizer)
    whole = _encode(tokenizer, context + answer)
    head = _encode(tokenizer, context)
    if whole[: len(head)] == head and len(whole) > len(head):
        return whole[len(head):]
    return _encode(tokenizer, answer)


def label_scores_from_probs(
    vocab: LabelVocabulary,
    next_probs: np.ndarray,
    sequence_probs: np.ndarray | None = None,
    *,
    top_k: int = 10,
    details: bool = False,
    decode=None,
) -> list[LabelScores]:
    """Label distributions from next-token probabilities.

    Parameters
    ----------
    vocab : LabelVocabulary
    next_probs : ndarray, shape (n_texts, vocab_size)
        Next-token probabilities at the answer position (rows sum to 1).
    sequence_probs : ndarray, shape (n_texts, len(vocab.all_sequences)), optional
        Chain-rule probability of each multi-token sequence after the prompt.
    top_k : int
        Number of top next tokens to report.
    details : bool
        Fill `LabelScores.variants`.
    decode : callable(int) -> str
        Token decoder for the top tokens.
    """
    n_texts = next_probs.shape[0]
    n_labels = len(vocab.labels)
    masses = np.zeros((n_texts, n_labels), dtype=np.float64)
    for j, ids in enumerate(vocab.token_ids):
        if len(ids):
            masses[:, j] = next_probs[:, ids].sum(axis=1, dtype=np.float64)
    column = 0
    for j, per_label in enumerate(vocab.sequences):
        for _ in per_label:
            masses[:, j] += sequence_probs[:, column]
            column += 1
    k = min(top_k, next_probs.shape[1])
    top_idx = np.argpartition(-next_probs, k - 1, axis=1)[:, :k] if k else np.zeros((n_texts, 0), int)
    results = []
    all_sequences = vocab.all_sequences
    for i in range(n_texts):
        mass = masses[i]
        total = mass.sum()
        probabilities = mass / total if total > 0 else np.full(n_labels, 1.0 / n_labels)
        order = top_idx[i][np.argsort(-next_probs[i, top_idx[i]], kind="stable")]
        top = [(decode(int(t)) if decode else str(int(t)), float(next_probs[i, t])) for t in order]
        variants: dict[str, list[tuple[str, float]]] = {}
        if details:
            column = 0
            for j, label in enumerate(vocab.labels):
                rows = [(vocab.token_strings[int(t)], float(next_probs[i, t])) for t in vocab.token_ids[j]]
                for seq in vocab.sequences[j]:
                    text = decode_sequence(decode, seq)
                    rows.append((text, float(sequence_probs[i, all_sequences.index(seq)])))
                variants[label] = sorted(rows, key=lambda r: -r[1])
        results.append(
            LabelScores(
                labels=list(vocab.labels),
                probabilities=probabilities,
                label_mass=mass,
                other_mass=float(max(0.0, 1.0 - total)),
                top_tokens=top,
                variants=variants,
            )
        )
    return results


def decode_sequence(decode, seq: Sequence[int]) -> str:
    return "".join(decode(int(t)) for t in seq) if decode else " ".join(map(str, seq))


def warn_if_low_label_mass(
    scores: Sequence[LabelScores] | Sequence[float], threshold: float = LOW_LABEL_MASS, *, adapter: bool = False
) -> float | None:
    """Warn `LowLabelMassWarning` when the median label mass is below ``threshold``; return that
    median (``None`` for no scores).

    ``scores``: `LabelScores`, or each text's total label mass (``label_mass.sum()``).
    ``adapter``: the scores come through a LoRA adapter (`howsure finetune`), whose default loss
    is normalised over the labels: nothing in it keeps the labels' share of the vocabulary up, so
    a small share is what training does, not a prompt the model misreads, and the warning says so
    (and names ``--label-mass-weight``, the loss term that keeps it up)."""
    if len(scores) == 0:
        return None
    masses = [s if isinstance(s, (int, float)) else float(s.label_mass.sum()) for s in scores]
    median = float(np.median(masses))
    if median < threshold:
        why = ("expected with a LoRA adapter from `howsure finetune` at its default loss, which is "
               "normalised over the labels, so training lets their share of the vocabulary fall while the "
               "normalised label probabilities (what it trained, and what calibration measures) stay "
               "meaningful; check them with `howsure evaluate`, or train with --label-mass-weight to keep "
               "the share up (needed where a server returns only its top tokens)" if adapter else
               "the model mostly answers something else, so the label probabilities rest on a small share "
               "of its answers and mean little; check the prompt and verbalizers with `howsure inspect`")
        warnings.warn(f"median probability on the labels is {median:.3f} (< {threshold}): {why}",
                      LowLabelMassWarning, stacklevel=2)
    return median
