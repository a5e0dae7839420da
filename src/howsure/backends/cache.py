"""A score cache around any backend: texts already scored for the same backend, model, adapter,
task and text come back from an SQLite file instead of the model.

The cache wraps a backend from outside (`CachedBackend`), so every backend gets it and none has
to know about it. A row's key is a SHA-256 over everything that changes a text's scores: the
backend's kind, the model's checksum (a preset's pinned file checksum; for a local file or
directory a fingerprint of its files' names, sizes and modification times; else its id), the
adapter's weight checksum (`adapter_checksum`: two adapters never share rows), the score-changing options
(dtype, device, exact_ties, as asked), the task's full definition (`Task.to_dict`: prompt,
labels, variant rule ...), ``top_k``, ``details`` and the text. Values are `LabelScores` as JSON,
never pickle: opening someone else's cache file can run no code.

Writers in several processes may share one file: SQLite serialises their transactions (each
batch of new rows is one), waiting up to `BUSY_TIMEOUT_S` for a lock, so no row is lost.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from howsure.backends.base import Backend, ProgressCallback
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure.errors import DataError
from howsure.models import PRESETS

FORMAT = "howsure-score-cache"
FORMAT_VERSION = "1"
META_TABLE = "howsure_score_cache"
SCORES_TABLE = "howsure_scores"
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction on the same file before failing."""
SCORE_OPTIONS = ("dtype", "device", "exact_ties", "base_url", "endpoint", "top_logprobs")
"""Backend options that change the scores, so they are part of the key (batch sizes and thread
counts change only the speed; a server's URL says which server's model it is, its top k how wide
the label mass bounds are). An API key is never an option here."""
_LOOKUP_CHUNK = 500  # keys per SELECT ... IN (...), under every SQLite's variable limit


def model_checksum(model: str) -> str:
    """What identifies ``model``'s weights in a cache key: a preset's pinned file checksum; for a
    local file or directory, a hash of its files' relative names, sizes and modification times
    (re-written weights change it, without reading gigabytes); otherwise the id itself."""
    if model in PRESETS:
        return f"sha256:{PRESETS[model].file_sha256}"
    path = Path(model).expanduser()
    if path.exists():
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        digest = hashlib.sha256()
        for file in files:
            stat = file.stat()
            digest.update(f"{file.relative_to(path) if file != path else file.name}\0{stat.st_size}\0"
                          f"{stat.st_mtime_ns}\n".encode())
        return f"files:{digest.hexdigest()}"
    return f"id:{model}"


ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
"""The files of a LoRA adapter directory that decide its scores (peft's names)."""


def adapter_checksum(directory: str | os.PathLike) -> str:
    """sha256 over a LoRA adapter directory's weights and config (`ADAPTER_FILES`; a few MB, so
    read in full): the same adapter copied elsewhere has the same checksum, a retrained one not.
    `DataError` naming the directory when it holds none of them."""
    directory = Path(directory)
    files = [directory / name for name in ADAPTER_FILES if (directory / name).is_file()]
    if not files:
        raise DataError(f"{str(directory)!r} holds no LoRA adapter ({' or '.join(ADAPTER_FILES[1:])}); "
                        "expected a directory written by `howsure finetune`")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            while block := handle.read(1 << 22):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def adapter_record(directory: str | os.PathLike) -> dict[str, str]:
    """What a scored file's meta says about the adapter its scores came from: its directory
    (absolute) and `adapter_checksum`."""
    return {"directory": str(Path(directory).resolve()), "checksum": adapter_checksum(directory)}


def scorer_adapter(backend: Any) -> str | None:
    """The adapter directory ``backend`` scores with, None without one; a `CachedBackend` tells
    it without loading its model."""
    if isinstance(backend, CachedBackend):
        return backend.adapter_dir
    info = getattr(backend, "adapter", None)  # the transformers backend's AdapterInfo
    return None if info is None else str(info.directory)


@dataclass(frozen=True)
class CacheIdentity:
    """Everything about the scorer that goes into a key, before the task and the text."""

    backend: str
    model: str
    adapter: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, backend: str, model: str, options: dict[str, Any] | None = None,
           adapter: str | None = None) -> "CacheIdentity":
        """The identity of ``backend`` (a `howsure.backends.BACKENDS` name) scoring with
        ``model``, the LoRA ``adapter`` directory merged into it (keyed by `adapter_checksum`)
        and the options as given (only `SCORE_OPTIONS` count)."""
        kept = {name: (options or {})[name] for name in SCORE_OPTIONS if name in (options or {})}
        return cls(backend, model_checksum(model), None if adapter is None else adapter_checksum(adapter), kept)

    def key_stem(self, task: Task, *, top_k: int, details: bool) -> bytes:
        """The part of every key that is the same for all texts of one call."""
        blob = {
            "backend": self.backend, "model": self.model, "adapter": self.adapter,
            "options": self.options, "task": task.to_dict(), "top_k": top_k, "details": details,
        }
        return json.dumps(blob, sort_keys=True, ensure_ascii=False, default=str).encode()


def scores_to_json(scores: LabelScores) -> str:
    """``scores`` as JSON that `scores_from_json` turns back into equal arrays and floats."""
    return json.dumps({
        "labels": list(scores.labels),
        "probabilities": np.asarray(scores.probabilities, dtype=np.float64).tolist(),
        "label_mass": np.asarray(scores.label_mass, dtype=np.float64).tolist(),
        "other_mass": float(scores.other_mass),
        "top_tokens": [[token, float(p)] for token, p in scores.top_tokens],
        "variants": {label: [[token, float(p)] for token, p in rows] for label, rows in scores.variants.items()},
        "label_mass_bounds": (None if scores.label_mass_bounds is None
                              else np.asarray(scores.label_mass_bounds, dtype=np.float64).tolist()),
    }, ensure_ascii=False)


def scores_from_json(text: str) -> LabelScores:
    data = json.loads(text)
    return LabelScores(
        labels=list(data["labels"]),
        probabilities=np.asarray(data["probabilities"], dtype=np.float64),
        label_mass=np.asarray(data["label_mass"], dtype=np.float64),
        other_mass=float(data["other_mass"]),
        top_tokens=[(token, float(p)) for token, p in data["top_tokens"]],
        variants={label: [(token, float(p)) for token, p in rows] for label, rows in data["variants"].items()},
        label_mass_bounds=(None if data.get("label_mass_bounds") is None
                           else np.asarray(data["label_mass_bounds"], dtype=np.float64)),
    )


class ScoreCache:
    """The SQLite file: key -> `LabelScores` JSON. Opening checks that the file is a score cache
    (or empty, then it becomes one), so a wrong path fails before any model loads."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise DataError(f"score cache {str(self.path)!r} is a directory; give a file name")
        try:
            self._db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                                       check_same_thread=False)
            self._check_or_create()
        except sqlite3.DatabaseError as exc:
            raise DataError(f"score cache {str(self.path)!r} is not a readable SQLite file ({exc}); "
                            "give a new file name or delete this one") from exc
        self._lock = threading.Lock()

    def _check_or_create(self) -> None:
        tables = {row[0] for row in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            self._db.execute("PRAGMA journal_mode=WAL")  # readers go on while another process writes
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                self._db.execute(f"INSERT OR IGNORE INTO {META_TABLE} VALUES ('format', ?), ('version', ?)",
                                 (FORMAT, FORMAT_VERSION))
                self._db.execute(f"CREATE TABLE IF NOT EXISTS {SCORES_TABLE} "
                                 "(key TEXT PRIMARY KEY, scores TEXT NOT NULL)")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return
        if META_TABLE not in tables or SCORES_TABLE not in tables:
            raise DataError(f"score cache {str(self.path)!r} is an SQLite database of something else "
                            f"(tables: {', '.join(sorted(tables))}); give the cache a file of its own")
        meta = dict(self._db.execute(f"SELECT name, value FROM {META_TABLE}").fetchall())
        if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise DataError(f"score cache {str(self.path)!r} has format {meta.get('format')!r} version "
                            f"{meta.get('version')!r}, expected {FORMAT!r} version {FORMAT_VERSION!r}; "
                            "give a new file name or delete this one")

    def get_many(self, keys: Sequence[str]) -> dict[str, LabelScores]:
        """The cached scores of those ``keys`` that have a row."""
        found: dict[str, LabelScores] = {}
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = list(keys[start:start + _LOOKUP_CHUNK])
                marks = ", ".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT key, scores FROM {SCORES_TABLE} WHERE key IN ({marks})", chunk)
                for key, text in rows:
                    try:
                        found[key] = scores_from_json(text)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise DataError(f"score cache {str(self.path)!r}: row {key[:12]}… is not scores JSON "
                                        f"({exc}); delete the file to start again") from exc
        return found

    def put_many(self, rows: dict[str, LabelScores]) -> None:
        """Store ``rows`` in one transaction (another process's rows for the same keys are the
        same scores, so the last write wins)."""
        if not rows:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(f"INSERT OR REPLACE INTO {SCORES_TABLE} (key, scores) VALUES (?, ?)",
                                     [(key, scores_to_json(scores)) for key, scores in rows.items()])
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM {SCORES_TABLE}").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class CachedBackend:
    """A `Backend` that answers from a `ScoreCache` and sends only the texts it has no row for
    to the wrapped backend, in one call.

    ``backend`` is a backend or a function that builds one: then the model loads only when a
    text misses, so a run whose texts are all cached never loads it. Other attributes
    (``prompt``, ``tokenizer`` ...) are the wrapped backend's (loading it)."""

    def __init__(self, backend: Backend | Callable[[], Backend], cache: ScoreCache | str | os.PathLike,
                 identity: CacheIdentity, model_id: str | None = None, adapter_dir: str | None = None) -> None:
        self._backend = None if callable(backend) and not hasattr(backend, "label_scores") else backend
        self._load = backend if self._backend is None else None
        self.cache = cache if isinstance(cache, ScoreCache) else ScoreCache(cache)
        self.identity = identity
        if model_id is None:
            model_id = self.backend.model_id
        #: identifies the model as the wrapped backend does (outputs and policies record it).
        self.model_id = model_id
        #: the LoRA adapter directory the wrapped backend merges in (its checksum is in ``identity``).
        self.adapter_dir = adapter_dir
        #: over all calls: texts answered from the cache file, texts the wrapped backend scored.
        self.hits = 0
        self.scored = 0

    @property
    def backend(self) -> Backend:
        """The wrapped backend, built on first use."""
        if self._backend is None:
            self._backend = self._load()
        return self._backend

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.backend, name)

    def label_scores(self, task: Task, texts: Sequence[str], *, top_k: int = 10, details: bool = False,
                     progress: ProgressCallback | None = None) -> list[LabelScores]:
        """Scores of ``texts`` as the wrapped backend gives them; see `Backend.label_scores`."""
        stem = self.identity.key_stem(task, top_k=top_k, details=details)
        keys = [hashlib.sha256(stem + b"\0" + text.encode("utf-8", "surrogatepass")).hexdigest() for text in texts]
        found = self.cache.get_many(list(dict.fromkeys(keys)))
        hits = sum(key in found for key in keys)
        if progress and hits:
            progress(hits)
        missing = list(dict.fromkeys(key for key in keys if key not in found))  # each text once
        if missing:
            text_of = dict(zip(keys, texts))
            scored = self.backend.label_scores(task, [text_of[key] for key in missing], top_k=top_k,
                                               details=details, progress=progress)
            new = dict(zip(missing, scored))
            self.cache.put_many(new)
            found.update(new)
            repeats = len(keys) - hits - len(missing)
            if progress and repeats:
                progress(repeats)
        self.hits += hits
        self.scored += len(missing)
        return [found[key] for key in keys]


def open_cached_backend(load: Callable[[], Backend], cache: str | os.PathLike, *, backend: str, model: str,
                        options: dict[str, Any] | None = None, adapter: str | None = None) -> CachedBackend:
    """``load`` (which builds ``backend`` for ``model`` with ``options``) behind the score cache
    at ``cache``: the file is checked now, the model loads on the first miss. ``adapter``: the
    LoRA adapter directory ``load`` merges in, part of every key."""
    return CachedBackend(load, cache, CacheIdentity.of(backend, model, options, adapter), model_id=model,
                         adapter_dir=None if adapter is None else str(adapter))


__all__ = [
    "ADAPTER_FILES",
    "CacheIdentity",
    "CachedBackend",
    "SCORE_OPTIONS",
    "ScoreCache",
    "adapter_checksum",
    "adapter_record",
    "model_checksum",
    "open_cached_backend",
    "scorer_adapter",
    "scores_from_json",
    "scores_to_json",
]
