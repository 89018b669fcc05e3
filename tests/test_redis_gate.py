"""The provider gate in Redis (studio.jobs.redis_gate), shared by processes: the limit holds across
them, a 429 seen by one holds the other, and a killed holder's slot expires."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from studio.jobs.redis_gate import RedisGate
from tests.celery_workers import ROOT
from tests.fakes.http import FakeServer, Response

DEADLINE = 120.0

# A process that sends ``rounds`` requests from each of ``threads`` threads to ``target``, each
# behind the gate; prints one JSON line per request: when its slot was taken (Redis time).
CLIENT = r"""
import json, sys, threading, urllib.request
import redis
from studio.jobs.redis_gate import RedisGate
url, name, limit, target, threads, rounds = sys.argv[1:7]
client = redis.Redis.from_url(url)
gate = RedisGate(client, name, int(limit), ttl=30)
stop, lock = threading.Event(), threading.Lock()
print("ready", flush=True)
sys.stdin.readline()  # go
def work():
    for _ in range(int(rounds)):
        assert gate.acquire(stop)
        seconds, micros = client.time()
        try:
            urllib.request.urlopen(target, timeout=60).read()
        finally:
            gate.release()
        with lock:
            print(json.dumps({"taken": seconds + micros / 1e6}), flush=True)
workers = [threading.Thread(target=work) for _ in range(int(threads))]
for w in workers: w.start()
for w in workers: w.join()
print("done", flush=True)
"""


class CountInFlight:
    """A provider stand-in that counts the requests it has at once (each takes a moment)."""

    def __init__(self, latency: float):
        self.latency = latency
        self.now = self.most = self.total = 0
        self.lock = threading.Lock()

    def __call__(self, request):
        with self.lock:
            self.now += 1
            self.total += 1
            self.most = max(self.most, self.now)
        try:
            threading.Event().wait(self.latency)  # the provider's latency, not a synchronisation
        finally:
            with self.lock:
                self.now -= 1
        return Response(200, {"ok": True})


def client(redis_url, name, limit, target, threads, rounds) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-c", CLIENT, redis_url, name, str(limit), target, str(threads),
                                str(rounds)], env=env, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def finish(process: subprocess.Popen) -> list[dict]:
    out, err = process.communicate(timeout=DEADLINE)
    assert process.returncode == 0 and out.rstrip().endswith("done"), err
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def gate(redis_url, name="openai", limit=3, ttl=30.0):
    import redis

    return RedisGate(redis.Redis.from_url(redis_url), name, limit, ttl=ttl)


def test_two_processes_never_exceed_the_provider_limit(redis_url):
    provider = CountInFlight(latency=0.03)
    with FakeServer(provider) as server:
        processes = [client(redis_url, "openai", 3, server.url + "/x", threads=4, rounds=6) for _ in range(2)]
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        taken = [finish(process) for process in processes]
    assert provider.total == 2 * 4 * 6 and all(len(t) == 24 for t in taken)
    assert provider.most <= 3  # eight threads in two processes, three slots
    assert provider.most >= 2  # (they did overlap: the limit was what held them)
    assert gate(redis_url).in_use() == 0  # every slot given back


def test_a_rate_limit_in_one_process_holds_the_other(redis_url):
    here = gate(redis_url)
    here.rate_limited(1.5)  # this process got a 429 with Retry-After: 1.5
    until = float(here.client.hget(here.state_key, "backoff_until"))
    assert here.try_acquire()[0] is False and 1.0 < here.try_acquire()[1] <= 1.5
    provider = CountInFlight(latency=0.03)
    with FakeServer(provider) as server:
        other = client(redis_url, "openai", 3, server.url + "/x", threads=2, rounds=2)
        other.stdin.write("go\n")
        other.stdin.flush()
        taken = finish(other)
    assert len(taken) == 4 and all(row["taken"] >= until for row in taken)  # none started during the backoff
    assert provider.most == 1  # and the limit was halved for everyone (3 -> 1) until calls succeed again


def test_without_retry_after_the_backoff_grows_and_is_shared(redis_url):
    one, two = gate(redis_url, limit=4), gate(redis_url, limit=4)
    one.rate_limited(None)
    first = two.backoff_left()
    assert 1.0 < first <= 2.0  # DEFAULT_BACKOFF
    two.rate_limited(float("nan"))  # unusable: the exponential delay, doubled
    assert 3.0 < one.backoff_left() <= 4.0
    two.succeeded()
    assert int(one.client.hget(one.state_key, "penalty")) == 0


def test_a_killed_holders_slot_expires(redis_url):
    code = ("import sys, threading, redis; from studio.jobs.redis_gate import RedisGate; "
            "g = RedisGate(redis.Redis.from_url(sys.argv[1]), 'local', 1, ttl=1); "
            "assert g.acquire(threading.Event()); print('holding', flush=True); threading.Event().wait()")
    holder = subprocess.Popen([sys.executable, "-c", code, redis_url], env={**os.environ, "PYTHONPATH": str(ROOT)},
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        here = gate(redis_url, name="local", limit=1)
        assert here.try_acquire() == (False, 0.0)  # the one slot is held by the other process
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        deadline = time.monotonic() + DEADLINE
        while not here.try_acquire()[0]:  # the dead holder never gives it back: its slot expires
            assert time.monotonic() < deadline, "the killed holder's slot never expired"
            threading.Event().wait(0.05)
        here.release()
        assert here.in_use() == 0
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait(30)


@pytest.mark.parametrize("limit", [0, -2])
def test_a_limit_below_one_means_one(redis_url, limit):
    assert gate(redis_url, limit=limit).max_limit == 1
