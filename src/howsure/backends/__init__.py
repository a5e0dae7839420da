"""Backends, chosen by name through a lazy map so torch or vLLM load only when chosen."""

from __future__ import annotations

import importlib
from typing import Any

from howsure.backends.base import Backend, LabelScores
from howsure.errors import ModelError

#: name -> "module:Class"; the module is imported only when the backend is asked for.
BACKENDS: dict[str, str] = {
    "transformers": "howsure.backends.transformers.backend:TransformersBackend",
}


def load_backend(model: str = "smollm2-135m", backend: str = "transformers", **options: Any) -> Backend:
    """Build a backend by name for ``model`` (a preset name, a local directory, a GGUF file or a
    hub id). ``options`` go to the backend's constructor (dtype, threads, batch size ...)."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend {backend!r}; available: {', '.join(sorted(BACKENDS))}")
    module_name, class_name = BACKENDS[backend].split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(model, **options)


__all__ = ["BACKENDS", "Backend", "LabelScores", "load_backend"]
