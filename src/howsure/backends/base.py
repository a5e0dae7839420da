"""The Backend protocol: the one thing every model backend must do.

A backend scores a batch of texts against a task's labels by reading the model's next-token
distribution at the answer position. Everything downstream (calibration, decisions, the review
service) sees only `LabelScores`, so a backend can be a local transformers model, an
OpenAI-compatible server with logprobs, llama.cpp or vLLM.
"""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

from howsure.core.scores import LabelScores
from howsure.core.task import Task

__all__ = ["Backend", "LabelScores", "ProgressCallback"]

ProgressCallback = Callable[[int], None]
"""Called with the number of texts just finished, so callers can drive a progress bar."""


@runtime_checkable
class Backend(Protocol):
    """A model that can score texts against a task's labels.

    Implementations live one per file in ``howsure/backends/`` and are chosen by name through
    `howsure.backends.load_backend`, so heavy imports (torch, vLLM) load only when chosen.
    """

    #: identifies the model for caches, outputs and policies (preset name, path or hub id).
    model_id: str

    def label_scores(
        self,
        task: Task,
        texts: Sequence[str],
        *,
        top_k: int = 10,
        details: bool = False,
        progress: ProgressCallback | None = None,
    ) -> list[LabelScores]:
        """Score each text against ``task``'s labels, one `LabelScores` per text, in order.

        Parameters
        ----------
        task : Task
            The prompt and labels.
        texts : sequence of str, length n
            The texts to classify; batching and prefix sharing are the backend's business.
        top_k : int
            How many most-probable next tokens to report per text.
        details : bool
            Also fill `LabelScores.variants` (the tokens counted for each label).
        progress : callable, optional
            Called with the number of texts finished after each internal batch.
        """
        ...
