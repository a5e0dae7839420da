"""The fine-tuning loss: cross-entropy over the labels' probabilities exactly as howsure scores
them (`howsure.scoring`: a label's mass is the total probability of its token variants, or of
its exact verbalizer, multi-token verbalizers by the chain rule; probabilities are the masses
normalised over the labels), read at the answer position only. Prompt tokens carry no loss.

The normalised probabilities say nothing about how much of the next-token distribution the
labels hold together, so a loss over them alone lets that total drift: an adapter trained so
can answer with words that are no label while its normalised probabilities are sharp.
``label_mass_weight`` adds ``-log(total label mass)`` with that weight; at 1 the loss is
``-log(mass of the gold label)`` over the whole vocabulary, the usual next-token cross-entropy
(summed over the label's variants)."""

from __future__ import annotations

from typing import Sequence

import torch

from howsure.backends.labels import LabelVocabulary


def label_log_masses(next_log_probs: torch.Tensor, vocab: LabelVocabulary,
                     sequence_log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Log label masses, shape (batch, n_labels), not normalised over the labels, from log
    next-token probabilities at the answer position (batch, vocab) and, for multi-token
    verbalizers, each sequence's chain-rule log probability (batch, len(vocab.all_sequences)),
    in that order."""
    log_masses = []
    column = 0
    for ids, sequences in zip(vocab.token_ids, vocab.sequences):
        parts = [next_log_probs[:, torch.as_tensor(ids, dtype=torch.long, device=next_log_probs.device)]]
        if sequences:
            parts.append(sequence_log_probs[:, column:column + len(sequences)])
            column += len(sequences)
        log_masses.append(torch.logsumexp(torch.cat(parts, dim=1), dim=1))
    return torch.stack(log_masses, dim=1)


def normalised(log_masses: torch.Tensor) -> torch.Tensor:
    """Log label probabilities from log label masses: the masses normalised over the labels."""
    return log_masses - torch.logsumexp(log_masses, dim=1, keepdim=True)


def label_log_probs(next_log_probs: torch.Tensor, vocab: LabelVocabulary,
                    sequence_log_probs: torch.Tensor | None = None) -> torch.Tensor:
    """Log label probabilities, shape (batch, n_labels): `label_log_masses` normalised."""
    return normalised(label_log_masses(next_log_probs, vocab, sequence_log_probs))


def answer_logits(logits: torch.Tensor) -> torch.Tensor:
    """The logits at the answer position, (batch, vocab), from (batch, positions, vocab): the
    last position, since prompts are left-padded so that every row's answer comes last."""
    return logits[:, -1, :]


def label_cross_entropy(label_log_probabilities: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """Mean negative log probability of each row's gold label (indices into the task's labels)."""
    return -label_log_probabilities.gather(1, gold.view(-1, 1)).mean()


def label_loss(log_masses: torch.Tensor, gold: torch.Tensor, label_mass_weight: float = 0.0) -> torch.Tensor:
    """The training loss from log label masses (batch, n_labels): the cross-entropy of the
    normalised label probabilities, plus ``label_mass_weight`` times the mean ``-log`` of the
    labels' total mass (module docstring)."""
    loss = label_cross_entropy(normalised(log_masses), gold)
    if label_mass_weight:
        loss = loss - label_mass_weight * torch.logsumexp(log_masses, dim=1).mean()
    return loss


def answer_position_loss(logits: torch.Tensor, gold: torch.Tensor, vocab: LabelVocabulary,
                         sequence_log_probs: torch.Tensor | None = None,
                         label_mass_weight: float = 0.0) -> torch.Tensor:
    """The loss of one batch from its logits (batch, positions, vocab): only the answer
    position's logits enter it, so no other position receives a gradient."""
    next_log_probs = answer_logits(logits).float().log_softmax(-1)
    return label_loss(label_log_masses(next_log_probs, vocab, sequence_log_probs), gold, label_mass_weight)


def gold_indices(labels: Sequence[str], label_names: Sequence[str], device=None) -> torch.Tensor:
    """Label names -> their indices in ``label_names`` as a long tensor."""
    position = {name: i for i, name in enumerate(label_names)}
    return torch.tensor([position[label] for label in labels], dtype=torch.long, device=device)
