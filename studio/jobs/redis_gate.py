"""The provider gate held in Redis, so every Celery worker on every machine obeys one limit.

State of a gate named ``N`` (a provider, or ``job:<id>`` for a job's own concurrency):

- ``studio:gate:N:slots``: a sorted set of the slots taken, each scored by the time (Redis server
  seconds) it expires. A holder refreshes its slot while its request runs (``refresh``); a slot
  whose worker was killed expires after ``ttl`` seconds, so a dead worker never keeps a slot.
- ``studio:gate:N:state``: a hash with ``limit`` (the current limit, halved after a rate limit and
  grown back by one after each run of successes, as ``ProviderGate``), ``backoff_until`` (Redis
  server seconds before which nobody may start a request), ``penalty`` and ``streak``.

Every change is one Lua script, so it is atomic across workers, and every time is Redis's own
clock (``TIME``): workers on machines with different clocks still agree.
"""

from __future__ import annotations

import secrets
import threading

from providers.retry import DEFAULT_MAX_HOLD_SECONDS, server_wait
from studio.jobs.runner import DEFAULT_BACKOFF, MAX_BACKOFF, Gate

POLL_SECONDS = 0.05  # how often a waiting worker asks again (a slot may free up at any time)
KEY_PREFIX = "studio:gate:"

# KEYS: slots, state. ARGV: token, ttl seconds, max limit. Returns {taken (0/1), seconds of backoff left}.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local max_limit = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local limit = tonumber(redis.call('HGET', KEYS[2], 'limit') or max_limit)
if limit > max_limit then limit = max_limit end
local backoff_until = tonumber(redis.call('HGET', KEYS[2], 'backoff_until') or '0')
if now < backoff_until then return {0, tostring(backoff_until - now)} end
if redis.call('ZCARD', KEYS[1]) >= limit then return {0, '0'} end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
return {1, '0'}
"""

# KEYS: slots. ARGV: token, ttl seconds. Extends the slot's expiry if it is still held.
_REFRESH = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now + tonumber(ARGV[2]), ARGV[1])
"""

# KEYS: state. ARGV: retry_after (negative: none), max hold, default backoff, max backoff, max limit.
# Returns the new backoff_until (Redis seconds) as text.
_RATE_LIMITED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local retry_after = tonumber(ARGV[1])
local penalty = redis.call('HINCRBY', KEYS[1], 'penalty', 1)
local delay
if retry_after >= 0 then
  delay = math.min(retry_after, tonumber(ARGV[2]))
else
  delay = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (penalty - 1))
end
local until_ = math.max(tonumber(redis.call('HGET', KEYS[1], 'backoff_until') or '0'), now + delay)
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or ARGV[5])
redis.call('HSET', KEYS[1], 'backoff_until', tostring(until_), 'limit', math.max(1, math.floor(limit / 2)),
           'streak', 0)
return tostring(until_)
"""

# KEYS: state. ARGV: max limit.
_SUCCEEDED = """
local max_limit = tonumber(ARGV[1])
local limit = tonumber(redis.call('HGET', KEYS[1], 'limit') or max_limit)
local streak = redis.call('HINCRBY', KEYS[1], 'streak', 1)
redis.call('HSET', KEYS[1], 'penalty', 0)
if limit < max_limit and streak >= limit then
  redis.call('HSET', KEYS[1], 'limit', limit + 1, 'streak', 0)
end
return 1
"""


class RedisGate(Gate):
    """At most ``limit`` requests at once under ``name`` across every process sharing ``client``'s
    Redis, and the shared backoff after a rate limit (``ProviderGate``'s rules). A slot expires
    ``ttl`` seconds after it was taken or last refreshed. One instance may serve several threads:
    each thread's slot is its own (``release`` and ``refresh`` act on the calling thread's)."""

    def __init__(self, client, name: str, limit: int, *, ttl: float, max_hold: float = DEFAULT_MAX_HOLD_SECONDS):
        if ttl <= 0:
            raise ValueError(f"ttl must be positive, not {ttl}")
        self.client = client
        self.name = name
        self.max_limit = max(1, int(limit))
        self.ttl = float(ttl)
        self.max_hold = max_hold
        self.slots_key = f"{KEY_PREFIX}{name}:slots"
        self.state_key = f"{KEY_PREFIX}{name}:state"
        self._acquire = client.register_script(_ACQUIRE)
        self._refresh = client.register_script(_REFRESH)
        self._rate_limited = client.register_script(_RATE_LIMITED)
        self._succeeded = client.register_script(_SUCCEEDED)
        self._local = threading.local()

    def try_acquire(self) -> tuple[bool, float]:
        """Take a slot now if one is free: (True, 0.0), or (False, seconds of backoff left; 0.0 when
        only the slots are full)."""
        token = secrets.token_hex(8)
        taken, wait = self._acquire(keys=[self.slots_key, self.state_key],
                                    args=[token, self.ttl, self.max_limit])
        if int(taken):
            self._local.token = token
            return True, 0.0
        return False, float(wait)

    def acquire(self, stop: threading.Event) -> bool:
        while not stop.is_set():
            taken, wait = self.try_acquire()
            if taken:
                return True
            stop.wait(min(max(wait, POLL_SECONDS), 0.5))
        return False

    def release(self) -> None:
        token = getattr(self._local, "token", None)
        if token is not None:
            self._local.token = None
            self.client.zrem(self.slots_key, token)

    def refresh(self) -> None:
        token = getattr(self._local, "token", None)
        if token is not None:
            self._refresh(keys=[self.slots_key], args=[token, self.ttl])

    def refresh_token(self, token: str) -> None:
        """``refresh`` for a slot taken by another thread (a heartbeat thread keeps its worker's)."""
        self._refresh(keys=[self.slots_key], args=[token, self.ttl])

    @property
    def token(self) -> str | None:
        """The calling thread's slot, if it holds one."""
        return getattr(self._local, "token", None)

    def rate_limited(self, retry_after: float | None) -> None:
        # The same rule as ProviderGate: no usable wait (negative, inf, NaN) gets the exponential delay
        wait = server_wait(retry_after, self.max_hold)
        self._rate_limited(keys=[self.state_key],
                           args=[-1 if wait is None else wait, self.max_hold, DEFAULT_BACKOFF, MAX_BACKOFF,
                                 self.max_limit])

    def succeeded(self) -> None:
        self._succeeded(keys=[self.state_key], args=[self.max_limit])

    def in_use(self) -> int:
        """Slots held now (expired ones not counted)."""
        now = self._server_time()
        return int(self.client.zcount(self.slots_key, now, "+inf"))

    def backoff_left(self) -> float:
        """Seconds before a request may start again (0.0: none)."""
        until = float(self.client.hget(self.state_key, "backoff_until") or 0.0)
        return max(0.0, until - self._server_time())

    def _server_time(self) -> float:
        seconds, micros = self.client.time()
        return seconds + micros / 1_000_000
