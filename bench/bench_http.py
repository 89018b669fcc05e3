"""HTTP generate vs the library call, on the echo provider, with concurrent clients.

Both sides make the same requests (one image, no cache: each is generated, saved and recorded):
- library: ``Studio.generate`` from ``--clients`` threads in this process;
- HTTP: ``POST /api/v1/generate`` from ``--clients`` threads (one keep-alive httpx client each) to a
  real server process, ``python -m studio serve --no-ui`` on a free port (rate limit off).
Each side gets its own fresh data folder; the sides take turns (``--rounds``). Prints p50 / p99
latency and requests per second for each, and the overhead ratios (HTTP over library).

    python bench/bench_http.py [--clients 8] [--requests 15] [--rounds 3] [--latency 0] [--size 64x64]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from studio.service import Studio  # noqa: E402
from studio.types import GenerationRequest  # noqa: E402
from tests.fakes import echo_provider  # noqa: E402

WARMUP = 4  # requests per side before measuring (first model lookups, connection set-up, page cache)


def percentile(values: list[float], share: float) -> float:
    """The ``share`` (0-1) percentile of ``values``, nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * len(ordered) + 0.5) - 1))]


def run_clients(clients: int, per_client: int, call) -> tuple[list[float], float]:
    """``call(client_index, request_index)`` from ``clients`` threads, ``per_client`` times each, all
    starting together. Returns (latency of each call in seconds, wall seconds for all of them)."""
    latencies: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)

    def worker(index: int) -> None:
        start.wait()
        for number in range(per_client):
            began = time.perf_counter()
            call(index, number)
            took = time.perf_counter() - began
            with lock:
                latencies.append(took)

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(worker, i) for i in range(clients)]
        start.wait()
        began = time.perf_counter()
        for future in futures:
            future.result()
        wall = time.perf_counter() - began
    return latencies, wall


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, latency: float) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "STUDIO_HOME": str(home), "STUDIO_PROVIDER_PLUGINS": echo_provider.PLUGIN_SPEC,
           "STUDIO_DEFAULT_PROVIDER": "echo", "STUDIO_VISITORS": "local", "STUDIO_API_RATE_LIMIT": "0",
           "ECHO_LATENCY": str(latency), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "studio", "serve", "--no-ui", "--port", str(port)], cwd=ROOT,
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/openapi.json", timeout=5).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        try:
            process.wait(timeout=0.1)  # the pause between looks; ends at once if the server exits
            raise SystemExit(f"the server exited with {process.returncode}")
        except subprocess.TimeoutExpired:
            pass
    process.kill()
    raise SystemExit("the server did not start in 120 s")


def report(name: str, latencies: list[float], wall: float) -> dict[str, float]:
    figures = {"p50": statistics.median(latencies), "p99": percentile(latencies, 0.99),
               "rps": len(latencies) / wall}
    print(f"{name:<8} {len(latencies):4d} requests  p50 {figures['p50'] * 1000:7.1f} ms  "
          f"p99 {figures['p99'] * 1000:7.1f} ms  {figures['rps']:7.1f} requests/s")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients on each side")
    parser.add_argument("--requests", type=int, default=15, help="requests per client per round")
    parser.add_argument("--rounds", type=int, default=3, help="turns each side takes, alternating")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds the echo provider takes per call")
    parser.add_argument("--size", default="64x64", help="image size WxH")
    args = parser.parse_args()
    width, height = (int(side) for side in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory() as folder:
        library_home, server_home = Path(folder) / "library", Path(folder) / "server"
        echo_provider.install(library_home / "catalog", latency=args.latency)
        studio = Studio(library_home)
        process, url = start_server(server_home, args.latency)
        sessions = [httpx.Client(base_url=url, timeout=120) for _ in range(args.clients)]

        def library_call(client: int, number: int) -> None:
            result = studio.generate(GenerationRequest(prompt=f"a lighthouse {client}-{number}", provider="echo",
                                                       width=width, height=height))
            assert len(result.images) == 1 and not result.cached

        def http_call(client: int, number: int) -> None:
            answer = sessions[max(client, 0)].post("/api/v1/generate", json={
                "prompt": f"a lighthouse {client}-{number}", "provider": "echo", "size": args.size})
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["images"]) == 1 and not answer.json()["cached"]

        # The sides take turns, round by round, so that a change in the machine's load (a shared
        # machine) falls on both alike; each side's figures pool its rounds.
        measured: dict[str, tuple[list[float], float]] = {"library": ([], 0.0), "HTTP": ([], 0.0)}
        try:
            for number in range(WARMUP):
                library_call(-1, number)
                http_call(-1, number)
            for _round in range(args.rounds):
                for name, call in (("library", library_call), ("HTTP", http_call)):
                    latencies, wall = run_clients(args.clients, args.requests, call)
                    measured[name] = (measured[name][0] + latencies, measured[name][1] + wall)
        finally:
            for session in sessions:
                session.close()
            process.terminate()
            process.wait(timeout=30)
            studio.close()

    print(f"echo provider (latency {args.latency:g} s), one {args.size} image per request, {args.clients} clients, "
          f"{args.rounds} rounds, {os.cpu_count()} CPU(s), load average {os.getloadavg()[0]:.1f}")
    lib = report("library", *measured["library"])
    net = report("HTTP", *measured["HTTP"])
    print(f"overhead: p50 x{net['p50'] / lib['p50']:.2f}, p99 x{net['p99'] / lib['p99']:.2f}, "
          f"throughput x{lib['rps'] / net['rps']:.2f} (library requests/s over HTTP requests/s); "
          f"HTTP adds {(net['p50'] - lib['p50']) * 1000:.1f} ms at p50")


if __name__ == "__main__":
    main()
