"""Score a table on a Ray cluster: the same job as `score_job.score_rows`, the model on many actors.

The rows still to score are cut into the chunks `score_rows` would score one after another
(input order, `CHUNK_ROWS` each). They become a Ray Data dataset of one item per chunk, mapped by
an actor pool (`map_batches` with a callable class, one chunk per call): every actor builds its
backend once, with the same `howsure.backends.load_backend` call and options as a single-process
run, and hands each chunk to ``backend.label_scores``, which sorts the chunk's texts by length
and batches them exactly as a single process does. Results stream back in input order
(``preserve_order``) and each finished chunk is appended by `score_rows`' own writer, so:

* the output equals single-process output row for row: same rows, same order, same values (the
  same passes over the same texts; only a machine that computes differently changes a float);
* a killed driver leaves a prefix of the final file and the same command resumes it;
* a killed actor loses no row: Ray restarts it (``max_restarts``) and runs its chunk again
  (``max_task_retries``); the chunk is written only once, when it comes back.

``ray`` is imported inside functions: it is heavy and an optional extra (``howsure[ray]``).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

import howsure
from howsure.backends import load_backend
from howsure.backends.base import Backend
from howsure.backends.cache import scores_from_json, scores_to_json
from howsure.core.scores import LabelScores
from howsure.core.task import Task
from howsure import errors
from howsure.errors import DataError, HowsureError, ModelError
from howsure.io.texts import TextRows
from howsure.pipelines.score_job import ScoreSummary, score_rows

#: Actors when none are asked for: one per CPU of a local cluster is too many for a model each.
DEFAULT_ACTORS = 2
CONNECT_TIMEOUT_S = 5.0
#: connections a ``ray://`` address gets when its proxy fails to start the client's server
CLIENT_SERVER_ATTEMPTS = 3
INSTALL_RAY = "pip install 'howsure[ray]' (ray[data,client]==2.60.0)"


@dataclass(frozen=True)
class ClusterBackend:
    """What `score_rows` records about the scorer (model, dtype that runs, adapter), as an actor
    of the cluster reported it: the driver never loads the model itself."""

    model_id: str
    dtype: str | None
    adapter: Any = None  # the backend's own adapter record (`scorer_adapter` reads it)


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra installs both; a bare ray lacks Data)
    except ImportError as exc:
        raise ModelError(f"--engine ray needs Ray Data, which is not installed ({exc}); {INSTALL_RAY}") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None) -> bool:
    """Connect this process to a Ray cluster; True when this call started one (then `disconnect`
    ends it). ``address``: None starts a local cluster on loopback with ``num_cpus`` CPUs (no
    dashboard); ``"auto"``, ``"HOST:PORT"`` (a node of the cluster) or ``"ray://HOST:10001"`` (Ray
    Client) joins an existing one, as `ray.init` reads them. Already connected: nothing to do.

    Raises `ModelError` when Ray is not installed or the cluster cannot be reached."""
    ray = _import_ray()
    if address and address.startswith("ray://") and importlib.util.find_spec("grpc") is None:
        raise ModelError(f"--address {address!r} is a Ray Client address, which needs grpcio (ray[client]); "
                         f"{INSTALL_RAY}")
    if ray.is_initialized():
        return False
    quiet = dict(logging_level="WARNING", log_to_driver=False)
    if address is None:
        # Workers of a local cluster import the very howsure this driver runs (a checkout too).
        here = str(Path(howsure.__file__).resolve().parents[1])
        path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, _node_ip_address="127.0.0.1",
                 runtime_env={"env_vars": {"PYTHONPATH": path}}, **quiet)
        return True
    _check_reachable(address)
    if address.startswith("ray://"):
        _client_token_auth()
    try:
        for attempt in range(1, CLIENT_SERVER_ATTEMPTS + 1):
            try:
                ray.init(address=address, **quiet)
                break
            except ConnectionAbortedError as exc:
                # A Ray Client proxy starts one server process per client; on a busy head that
                # process sometimes exits at once ("SpecificServer startup failed" in its log)
                # and the client is refused. A new connection gets a new process.
                if "Initialization failure" not in str(exc) or attempt == CLIENT_SERVER_ATTEMPTS:
                    raise
                ray.shutdown()
    except (ConnectionError, RuntimeError, TimeoutError, ValueError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"could not reach the Ray cluster at --address {address!r}: {first_line}; start one with "
                         "`ray start --head` and pass the address it prints (or `auto` on one of its nodes)") from None
    return False


def _client_token_auth() -> None:
    """Give a Ray Client the token `ray start` would use. `ray start` (ray 2.60) turns token
    authentication on when ``RAY_AUTH_MODE`` is unset and a token exists (``~/.ray/auth_token``,
    written by any earlier local `ray.init`), but a Ray Client does not, so it sends no token
    and the head answers it with a 30 s "connection timeout". An explicit ``RAY_AUTH_MODE``
    (token or disabled) is left as it is."""
    if os.environ.get("RAY_AUTH_MODE") is not None:
        return
    from ray._raylet import AuthenticationTokenLoader, Config

    if AuthenticationTokenLoader.instance().has_token(ignore_auth_mode=True):
        os.environ["RAY_AUTH_MODE"] = "token"
        Config.initialize("")  # the cached config reads the mode again


def _check_reachable(address: str) -> None:
    """A ``HOST:PORT`` or ``ray://HOST:PORT`` where nothing listens fails now: `ray.init` would
    keep retrying it."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if "://" in host or not sep or not port.isdigit():
        return  # auto, or a scheme ray.init reads itself
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ModelError(f"could not reach the Ray cluster at --address {address!r}: {exc.strerror or exc}; start "
                         "one with `ray start --head` and pass the address it prints") from None


def disconnect() -> None:
    _import_ray().shutdown()


def load_from(directory: str, model: str, backend: str, options: dict[str, Any]) -> Backend:
    """`load_backend` as the driver would call it in ``directory``: relative model, adapter and
    cache paths mean what they mean there (a worker starts elsewhere). On a node without that
    directory, paths are taken as they are: give such a cluster absolute ones."""
    if os.path.isdir(directory):
        os.chdir(directory)  # a worker process of its own (an actor) or Ray's task worker
    return load_backend(model, backend, **options)


class _ChunkScorer:
    """One actor of the pool: builds its backend once, then scores whole chunks."""

    def __init__(self, load: Callable[[], Backend], task: Task, top_k: int) -> None:
        self.backend = load()
        self.task = task
        self.top_k = top_k

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scored = np.empty(len(batch["chunk"]), dtype=object)
        failed = np.full(len(batch["chunk"]), "", dtype=object)
        for i, texts in enumerate(batch["texts"]):
            try:
                scores = self.backend.label_scores(self.task, [str(t) for t in texts], top_k=self.top_k)
            except HowsureError as exc:  # sent back as data: Ray's wrapping loses the exception itself
                scored[i], failed[i] = [], f"{type(exc).__name__}:{exc}"
                continue
            # JSON that `scores_from_json` turns back into equal floats (the score cache's format).
            scored[i] = [scores_to_json(s) for s in scores]
        return {"chunk": np.asarray(batch["chunk"]), "scores": scored, "error": failed}


def howsure_cause(exc: BaseException) -> HowsureError | None:
    """The howsure error a Ray exception wraps (a Ray task's keeps it as ``cause``), so the
    command prints the backend's one line; None when none."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, HowsureError):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def backend_error(sent: str) -> HowsureError:
    """The typed error an actor sent back as ``"ClassName:message"``."""
    name, _, message = sent.partition(":")
    kind = getattr(errors, name, None)
    return kind(message) if isinstance(kind, type) and issubclass(kind, HowsureError) else ModelError(message)


def _describe(load: Callable[[], Backend]) -> ClusterBackend:
    backend = load()
    return ClusterBackend(backend.model_id, getattr(backend, "dtype", None), getattr(backend, "adapter", None))


def _scored_chunks(load: Callable[[], Backend], task: Task, chunks: Sequence[Sequence[str]], top_k: int,
                   actors: int, num_cpus: float | None, num_gpus: float | None) -> Iterator[list[str]]:
    """The Ray Data pipeline: each chunk's scores as `scores_to_json` strings, in chunk order.
    Runs where Ray Data can drive a job: a process connected to the cluster as a worker or
    driver (a Ray Client process cannot, see `score_chunks_on_ray`)."""
    ray = _import_ray()
    dataset = ray.data.from_items([{"chunk": k, "texts": list(texts)} for k, texts in enumerate(chunks)],
                                  override_num_blocks=len(chunks))
    dataset.context.execution_options.preserve_order = True  # chunks come back in input order
    dataset.context.enable_progress_bars = False  # the caller shows one bar for the whole file
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # not a line per dataset on the user's terminal
    scored = dataset.map_batches(
        _ChunkScorer, batch_size=1, compute=ray.data.ActorPoolStrategy(size=min(actors, len(chunks))),
        fn_constructor_kwargs={"load": load, "task": task, "top_k": top_k},
        num_cpus=num_cpus, num_gpus=num_gpus,
    )
    expected = 0
    for item in scored.iter_rows():
        if int(item["chunk"]) != expected:
            raise ModelError(f"Ray returned chunk {int(item['chunk'])} where chunk {expected} was due")
        if item["error"]:
            raise backend_error(item["error"])
        expected += 1
        yield list(item["scores"])
    if expected != len(chunks):
        raise ModelError(f"Ray returned {expected} of {len(chunks)} chunks")


class _ChunkStream:
    """`_scored_chunks` run on the cluster, handed out one chunk per call: what a Ray Client
    driver (``ray://``) iterates, because Ray Data's executor needs a process of the cluster
    (from a client it fails with ``'Worker' object has no attribute 'core_worker'``)."""

    def __init__(self, *pipeline: Any) -> None:
        self._chunks = _scored_chunks(*pipeline)

    def next_chunk(self) -> list[str] | None:
        """The next chunk's scores; None after the last. A howsure error comes back as
        ``"ClassName:message"`` (the remote wrapping would lose its type)."""
        try:
            return next(self._chunks, None)
        except HowsureError as exc:
            return f"{type(exc).__name__}:{exc}"  # type: ignore[return-value]


def _client_mode() -> bool:
    from ray.util.client import ray as client

    return bool(client.is_connected())


def _chunks_through_client(ray, *pipeline: Any) -> Iterator[list[str]]:
    stream = ray.remote(_ChunkStream).options(num_cpus=0, max_restarts=0).remote(*pipeline)
    try:
        while (chunk := ray.get(stream.next_chunk.remote())) is not None:
            if isinstance(chunk, str):
                raise backend_error(chunk)
            yield chunk
    finally:
        ray.kill(stream)


def score_chunks_on_ray(load: Callable[[], Backend], task: Task, chunks: Sequence[Sequence[str]], top_k: int, *,
                        actors: int = DEFAULT_ACTORS, num_cpus: float | None = None,
                        num_gpus: float | None = None) -> Iterator[list[LabelScores]]:
    """Each chunk's scores, in chunk order, as they come back from a pool of ``actors`` actors
    (each ``load()`` once), each holding ``num_cpus`` CPUs and ``num_gpus`` GPUs of the cluster.
    Needs `connect` first. Connected through Ray Client (``ray://``), the pipeline runs in an
    actor of the cluster and this process fetches its chunks one by one.

    Ray Data's actor pool restarts a dead actor and retries its chunk without end by default
    (``max_restarts=-1``, ``max_task_retries=-1`` in ray 2.60's ``ActorPoolMapOperator``);
    ``tests/test_ray_engine.py`` kills one mid-run."""
    ray = _import_ray()
    if not chunks:
        return
    pipeline = (load, task, chunks, top_k, actors, num_cpus, num_gpus)
    try:
        source = _chunks_through_client(ray, *pipeline) if _client_mode() else _scored_chunks(*pipeline)
        for scores in source:
            yield [scores_from_json(text) for text in scores]
    except Exception as exc:  # a howsure error Ray wrapped; anything else as Ray raised it
        raise howsure_cause(exc) or exc


def score_rows_on_ray(
    model: str,
    backend: str,
    options: dict[str, Any],
    task: Task,
    rows: TextRows,
    output: str | Path,
    *,
    address: str | None = None,
    actors: int = DEFAULT_ACTORS,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    load: Callable[[], Backend] | None = None,
    **score_options: Any,
) -> ScoreSummary:
    """`score_rows` with the chunks scored on Ray (see the module notes): the same output file,
    summary, sidecar and resume rules. ``backend``/``model``/``options`` are what
    `load_backend` gets in every actor; ``load`` replaces that call (a zero-argument callable
    Ray can ship to the actors). ``address``: see `connect` (None: a local cluster, ended
    afterwards). ``num_cpus``/``num_gpus``: resources each actor holds (Ray's default: 1 CPU).
    ``score_options`` go to `score_rows`."""
    if isinstance(actors, bool) or not isinstance(actors, int) or actors < 1:
        raise DataError(f"--actors must be a whole number >= 1, got {actors!r}")
    load = load or functools.partial(load_from, os.getcwd(), model, backend, options)
    local_cpus = max(actors * int(num_cpus or 1), os.cpu_count() or 1)  # room for every actor asked for
    started = connect(address, num_cpus=local_cpus if address is None else None)
    try:
        ray = _import_ray()
        try:  # the first load on the cluster: a bad model or option fails here, once, before any actor
            identity = ray.get(ray.remote(_describe).options(max_retries=0, num_cpus=num_cpus, num_gpus=num_gpus)
                               .remote(load))
        except ray.exceptions.RayTaskError as exc:
            raise howsure_cause(exc) or ModelError(f"loading {model!r} on the Ray cluster failed: {exc.cause!r}") from None
        engine = functools.partial(score_chunks_on_ray, load, actors=actors, num_cpus=num_cpus, num_gpus=num_gpus)
        return score_rows(identity, task, rows, output, score_chunks=engine, **score_options)
    finally:
        if started:
            disconnect()


__all__ = ["ClusterBackend", "DEFAULT_ACTORS", "connect", "disconnect", "score_chunks_on_ray", "score_rows_on_ray"]
