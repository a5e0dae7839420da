"""What a classify request may ask of the model, and dropping the work of clients that left.

The rule for long input, in tokens of the model's own tokenizer (the text alone, without the
prompt around it):

* a text over ``max_text_tokens`` is refused with 422 ``invalid_input`` naming the item, its
  token count and the limit (nothing is truncated: a cut text is a different text);
* a request whose texts add up to over ``max_request_tokens`` is refused with 413
  ``too_large`` naming its total and the limit;
* a request that would take the tokens waiting in the model's queue (all clients'
  ``max_queue_tokens``, or this client's ``max_client_tokens``) over is refused with 429
  ``too_many_requests`` and a ``Retry-After`` header (`howsure.service.batching.QueueFull`).

A backend without a ``tokenizer`` attribute is charged a text's UTF-8 bytes, an upper bound
on the tokens of any byte-level tokenizer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from howsure.errors import DataError, HowsureError

T = TypeVar("T")

#: Most tokens one micro-batch holds (`create_app`'s ``max_batch_tokens``), and so the most one
#: forward pass needs (`howsure serve --batch-tokens`'s default).
MAX_BATCH_TOKENS = 1536


class RequestTooLarge(HowsureError):
    """The request's texts add up to more tokens than one request may carry (HTTP 413)."""


class ClientGone(HowsureError):
    """The HTTP client disconnected before its texts were scored; they were not."""


class RequestLimits:
    """Counts a request's tokens and checks them against the per-text and per-request limits."""

    def __init__(self, backend: Any, *, max_text_tokens: int, max_request_tokens: int) -> None:
        for name, value in (("max_text_tokens", max_text_tokens), ("max_request_tokens", max_request_tokens)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DataError(f"{name} must be an integer >= 1, got {value!r}")
        self.tokenizer = getattr(backend, "tokenizer", None)
        self.max_text_tokens = max_text_tokens
        self.max_request_tokens = max_request_tokens

    def count(self, texts: Sequence[str]) -> list[int]:
        """Tokens of each text, as the model's tokenizer splits it."""
        if self.tokenizer is None:
            return [len(text.encode("utf-8")) for text in texts]
        encoded = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(ids) for ids in encoded]

    def check(self, texts: Sequence[str], *, batch: bool) -> list[int]:
        """The tokens of each text; `DataError` (422) for a text over the limit, `RequestTooLarge`
        (413) for a request over its total. ``batch``: the texts came as ``items`` (names them
        ``items.N.text`` in the message)."""
        tokens = self.count(texts)
        for index, count in enumerate(tokens):
            if count > self.max_text_tokens:
                where = f"body.items.{index}.text" if batch else "body.text"
                raise DataError(f"{where} has {count} tokens, over the limit of {self.max_text_tokens} tokens per "
                                "text; shorten it (texts are refused, not truncated)")
        total = sum(tokens)
        if total > self.max_request_tokens:
            raise RequestTooLarge(f"the request's texts have {total} tokens in all, over the limit of "
                                  f"{self.max_request_tokens} tokens per request; send them in smaller requests")
        return tokens


async def until_disconnected(request: Any) -> None:
    """Return when the HTTP client of ``request`` has gone away (its body is already read, so
    the next ASGI message is the disconnect; servers send it once the response is complete too,
    which is after this is cancelled)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def unless_disconnected(request: Any, work: Awaitable[T]) -> T:
    """Await ``work`` but cancel it, and raise `ClientGone`, if the client disconnects first.
    Cancelling a `MicroBatcher.submit` takes its waiting texts out of the queue unscored."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task not in done:
        task.cancel()
        raise ClientGone("the client disconnected before its texts were scored; they were dropped")
    return task.result()
