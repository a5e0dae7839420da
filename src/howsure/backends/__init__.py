"""Backends, chosen by name through a lazy map so torch or vLLM load only when chosen."""

from __future__ import annotations

import importlib
import os
from typing import Any

from howsure.backends.base import Backend
from howsure.backends.cache import CachedBackend, open_cached_backend
from howsure.core.scores import LabelScores
from howsure.errors import ModelError

#: name -> "module:Class"; the module is imported only when the backend is asked for.
BACKENDS: dict[str, str] = {
    "transformers": "howsure.backends.transformers.backend:TransformersBackend",
    "openai": "howsure.backends.openai:OpenAIBackend",
    "vllm": "howsure.backends.vllm:VLLMBackend",
    "llamacpp": "howsure.backends.llamacpp:LlamaCppBackend",
}


def load_backend(model: str = "smollm2-135m", backend: str = "transformers", *,
                 cache: str | os.PathLike | None = None, **options: Any) -> Backend:
    """Build a backend by name for ``model`` (a preset name, a local directory, a GGUF file or a
    hub id). ``options`` go to the backend's constructor (dtype, threads, batch size ...).

    ``cache``: an SQLite score cache file (`howsure.backends.cache`); texts already in it skip
    the model, and the model loads only when a text is not."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    if cache is not None:
        return open_cached_backend(lambda: load_backend(model, backend, **options), cache,
                                   backend=backend, model=model, options=options, adapter=options.get("adapter"))
    module_name, class_name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, **options)


__all__ = ["BACKENDS", "Backend", "CachedBackend", "LabelScores", "load_backend"]
