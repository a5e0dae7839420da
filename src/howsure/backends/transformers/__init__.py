"""The Hugging Face transformers backend and the CPU fast paths it installs: backend.py scores,
precision.py, cache.py, planning.py, onednn.py, attention.py, unpadding.py and cpu_features.py
each hold one of the things it does to a model or a batch."""

from howsure.backends.transformers.backend import DTYPES, TransformersBackend, resolve_device, top_two_gap
from howsure.backends.transformers.cache import batch_prefix_cache
from howsure.backends.transformers.planning import map_concurrently, split_sorted
from howsure.backends.transformers.precision import MixedPrecisionLinear, packed_precision

__all__ = [
    "DTYPES",
    "MixedPrecisionLinear",
    "TransformersBackend",
    "batch_prefix_cache",
    "map_concurrently",
    "packed_precision",
    "resolve_device",
    "split_sorted",
    "top_two_gap",
]
