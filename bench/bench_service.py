"""Classify throughput of the review service vs offline batch scoring, measured in one run.

* offline: ``backend.label_scores(task, texts)`` on the bundled model, all texts in one call
  (the backend sorts them all by length and batches them), in this process, with the
  backend's default batch settings (32 texts, 4096 padded tokens: the fastest offline);
* service: ``howsure serve`` in a subprocess with the same model and thread count, on a
  fresh SQLite file; ``--clients`` concurrent clients (asyncio; raw HTTP/1.1 on keep-alive
  connections, or httpx with ``--http httpx``, which costs the shared cores more CPU) send
  the same texts to ``POST /v1/classify``, ``--items-per-request`` texts per request, until
  every text is done, and each request's latency is recorded. The service does everything it
  does in production: micro-batching, calibration and routing, the audit draw, one SQLite
  transaction per request before answering. Its policy is certified on the first offline
  pass's scores and the sample's labels (it only routes the bench's items).

The phases alternate, offline / service / offline / service / ... / offline (``--rounds``
service phases), and each service phase is compared with the mean of the offline passes
either side of it: on a machine shared with other work the speed drifts, and a ratio of
neighbours is what survives that. It prints every phase, the ratios (the target is > 0.85)
with their median, p50/p90/p99 latency and the service's batch sizes.

    python bench/bench_service.py                          # 256 texts, 32 clients, 2 threads, 3 rounds
    python bench/bench_service.py --texts 512 --rounds 5 --threads 4
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "src" / "howsure" / "samples" / "rt_polarity_2000.csv"
#: The median ratio the service should beat (issue 12).
TARGET_RATIO = 0.85


def load_texts(n: int) -> tuple[list[str], list[str]]:
    import csv

    with open(SAMPLE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))[:n]
    return [row["text"] for row in rows], [row["label"] for row in rows]


def offline_pass(backend, task, texts: list[str]) -> tuple[float, list]:
    started = time.perf_counter()
    scores = backend.label_scores(task, texts)
    return time.perf_counter() - started, scores


def process_cpu_s(pid: int | None = None) -> float:
    """CPU seconds (user + system) a process has used: this one, or ``pid``'s (Linux /proc)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


class RawClient:
    """One keep-alive HTTP/1.1 connection that sends JSON POSTs and reads the answers with a
    few lines of asyncio (no HTTP library): the load generator shares the machine's cores with
    the server, and httpx spends several ms of CPU per request, which then goes missing from
    the service's side of the comparison."""

    def __init__(self, url: str, token: str) -> None:
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.head = (f"Host: {parts.netloc}\r\nAuthorization: Bearer {token}\r\n"
                     "Content-Type: application/json\r\n").encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: dict) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        body = json.dumps(payload).encode()
        self.writer.write(b"POST " + path.encode() + b" HTTP/1.1\r\n" + self.head
                          + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        length = int(next(v for k, v in headers.items() if k.lower() == "content-length"))
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()


async def run_clients(url: str, token: str, texts: list[str], clients: int, per_request: int,
                      http: str = "raw") -> tuple[float, list[float]]:
    import httpx

    requests = [texts[i:i + per_request] for i in range(0, len(texts), per_request)]
    queue: asyncio.Queue = asyncio.Queue()
    for chunk in requests:
        queue.put_nowait(chunk)
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120,
                                 limits=limits) as shared:
        async def post(raw: RawClient | None, payload: dict) -> tuple[int, str]:
            if raw is not None:
                status, body = await asyncio.wait_for(raw.post("/v1/classify", payload), 120)
                return status, body[:300].decode("utf-8", "replace")
            response = await shared.post("/v1/classify", json=payload)
            return response.status_code, response.text[:300]

        async def client() -> None:
            raw = RawClient(url, token) if http == "raw" else None
            try:
                while True:
                    try:
                        chunk = queue.get_nowait()
                    except asyncio.QueueEmpty:
                        return
                    started = time.perf_counter()
                    status, text = await post(raw, {"items": [{"text": t} for t in chunk]})
                    latencies.append(time.perf_counter() - started)
                    if status != 200:
                        raise RuntimeError(f"classify answered {status}: {text}")
            finally:
                if raw is not None:
                    await raw.close()

        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=256, help="How many texts of the bundled sample.")
    parser.add_argument("--rounds", type=int, default=3,
                        help="Service phases (each between two offline passes); the target is on the median of 3.")
    parser.add_argument("--clients", type=int, default=32, help="Concurrent clients.")
    parser.add_argument("--items-per-request", type=int, default=1)
    parser.add_argument("--http", choices=("raw", "httpx"), default="raw",
                        help="The clients' HTTP: raw asyncio streams (little CPU beside the server) or httpx.")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, offline and in the service.")
    parser.add_argument("--max-batch", type=int, default=32, help="The service's --max-batch.")
    parser.add_argument("--offline-batch-size", type=int, default=32,
                        help="Offline texts per pass (the backend's default).")
    parser.add_argument("--max-wait-ms", type=float, default=10.0)
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="The service's --batch-tokens (default: howsure serve's own).")
    parser.add_argument("--offline-batch-tokens", type=int, default=4096,
                        help="Offline padded-token budget (the backend's default, best for one call over all texts).")
    parser.add_argument("--model", default=None, help="Default: the bundled model.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures here.")
    args = parser.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from howsure.backends import load_backend
    from howsure.models import DEFAULT_MODEL
    from howsure.decisions.policy_certification import certify_policy
    from howsure.service.store import ReviewStore
    from howsure.core.task import load_task

    model = args.model or DEFAULT_MODEL
    texts, labels = load_texts(args.texts)
    task = load_task("sentiment")
    backend = load_backend(model, threads=args.threads, batch_size=args.offline_batch_size,
                           batch_tokens=args.offline_batch_tokens)
    backend.label_scores(task, texts[:8])  # warm-up: prefix cache, allocator
    print(f"model {model}, {len(texts)} texts, {args.clients} clients ({args.http}) x {args.items_per_request} text(s) per "
          f"request, {args.threads} torch threads, max_batch {args.max_batch}, max_wait_ms {args.max_wait_ms}, "
          f"batch_tokens {args.batch_tokens or 'as howsure serve'} (offline {args.offline_batch_tokens}), {os.cpu_count()} CPUs", flush=True)

    offline_s, scores = offline_pass(backend, task, texts)
    offline = [offline_s]
    print(f"offline pass 1: {offline_s:.2f} s, {len(texts) / offline_s:.1f} texts/s", flush=True)
    raw = np.vstack([s.probabilities for s in scores])
    policy = certify_policy(labels, raw, target_accuracy=0.9, delta=0.1, task=task, model_id=model)

    import httpx

    service, latencies = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        policy_path = policy.save(tmp_path / "policy.json")
        db = str(tmp_path / "bench.db")
        with ReviewStore(db) as store:
            store.add_user("bench", "admin", actor="bench")
            token = store.create_token("bench", actor="bench")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "howsure", "serve", "--db", db, "--policy", str(policy_path),
                   "--model", model, "--port", str(port), "--threads", str(args.threads),
                   "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms),
                   "--log-level", "warning"]
        if args.batch_tokens is not None:
            command += ["--batch-tokens", str(args.batch_tokens)]
        log = open(tmp_path / "serve.log", "wb")
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        try:
            deadline = time.monotonic() + 300
            while True:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("howsure serve did not start:\n" + (tmp_path / "serve.log").read_text())
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.2)
            asyncio.run(run_clients(url, token, texts[:8], 4, 1))  # warm-up
            cpu = {"clients": 0.0, "server": 0.0}
            warm = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
            for round_number in range(1, args.rounds + 1):
                client_cpu, server_cpu = process_cpu_s(), process_cpu_s(server.pid)
                wall, round_latencies = asyncio.run(
                    run_clients(url, token, texts, args.clients, args.items_per_request, args.http))
                cpu["clients"] += process_cpu_s() - client_cpu
                cpu["server"] += process_cpu_s(server.pid) - server_cpu
                service.append(wall)
                latencies.extend(round_latencies)
                print(f"service round {round_number}: {wall:.2f} s, {len(texts) / wall:.1f} texts/s", flush=True)
                offline_s, _ = offline_pass(backend, task, texts)
                offline.append(offline_s)
                print(f"offline pass {round_number + 1}: {offline_s:.2f} s, {len(texts) / offline_s:.1f} texts/s",
                      flush=True)
            stats = httpx.get(f"{url}/v1/stats", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        finally:
            server.terminate()
            server.wait(timeout=30)

    n = len(texts)
    ratios = [(n / wall) / statistics.mean([n / offline[i], n / offline[i + 1]]) for i, wall in enumerate(service)]
    batching, before = stats["batching"], warm["batching"]
    batches = batching["batches"] - before["batches"]
    mean_batch = (batching["items"] - before["items"]) / batches
    busy = batching["busy_s"] - before["busy_s"]  # seconds inside backend.label_scores
    figures = {
        "model": model, "texts": n, "clients": args.clients, "items_per_request": args.items_per_request,
        "http": args.http,
        "threads": args.threads, "max_batch": args.max_batch, "offline_batch_size": args.offline_batch_size, "max_wait_ms": args.max_wait_ms,
        "batch_tokens": args.batch_tokens, "offline_batch_tokens": args.offline_batch_tokens, "rounds": args.rounds,
        "offline_texts_per_s": [round(n / t, 2) for t in offline],
        "service_texts_per_s": [round(n / t, 2) for t in service],
        "ratios": [round(r, 3) for r in ratios], "median_ratio": round(statistics.median(ratios), 3),
        "latency_s": {"p50": round(percentile(latencies, 50), 3), "p90": round(percentile(latencies, 90), 3),
                      "p99": round(percentile(latencies, 99), 3), "max": round(max(latencies), 3)},
        "micro_batches": batches, "mean_batch": round(mean_batch, 2),
        "model_busy_share": round(busy / sum(service), 3),
        "model_s_per_text": {"service": round(busy / (n * len(service)), 4),
                             "offline": round(statistics.mean(offline) / n, 4)},
        "automation_rate": stats["overall"]["automation_rate"],
        "cpu_s_per_text": {"clients": round(cpu["clients"] / (n * len(service)), 4),
                           "server": round(cpu["server"] / (n * len(service)), 4),
                           "server_model": round(busy * args.threads / (n * len(service)), 4)},
    }
    print()
    print(f"{'phase':28}{'texts/s':>9}")
    for i in range(len(service)):
        print(f"{'offline label_scores':28}{n / offline[i]:>9.1f}")
        print(f"{f'service, {args.clients} clients':28}{n / service[i]:>9.1f}   ratio {ratios[i]:.3f} "
              "(to the mean of the offline passes either side)")
    print(f"{'offline label_scores':28}{n / offline[-1]:>9.1f}")
    print(f"median ratio {statistics.median(ratios):.3f} (target > {TARGET_RATIO})")
    lat = figures["latency_s"]
    print(f"latency per request: p50 {lat['p50'] * 1000:.0f} ms, p90 {lat['p90'] * 1000:.0f} ms, "
          f"p99 {lat['p99'] * 1000:.0f} ms, max {lat['max'] * 1000:.0f} ms ({len(latencies)} requests)")
    print(f"service micro-batches: {batches}, mean {mean_batch:.1f} texts (largest {batching['largest']}); the model "
          f"was busy {busy / sum(service):.0%} of the service phases, {busy / (n * len(service)) * 1000:.1f} ms per "
          f"text (offline {statistics.mean(offline) / n * 1000:.1f} ms)")
    per_text = figures["cpu_s_per_text"]
    print(f"CPU per text in the service phases: server {per_text['server'] * 1000:.0f} ms (the model's "
          f"{args.threads} threads at most {per_text['server_model'] * 1000:.0f} of it), clients "
          f"{per_text['clients'] * 1000:.0f} ms; {os.cpu_count()} CPUs give {os.cpu_count() * 1000 / (n / statistics.mean(service)):.0f} ms "
          "per text at the service's rate")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    main()
