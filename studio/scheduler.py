"""Who looks at the schedules: a thread in this process (embedded default) or Celery beat (scaled).

``start_scheduler(studio)`` is called by the web servers (Streamlit, Gradio, ``studio serve``) once
they have started; ``studio schedule run`` runs the same loop in the foreground. Whether a thread
starts follows ``Settings.scheduler`` (``STUDIO_SCHEDULER``):

* ``auto`` (default): a thread when the studio has no broker; with ``STUDIO_BROKER_URL`` set, Celery
  beat (``celery -A studio.worker beat``) fires the schedules through its task (``studio.worker``),
  and the web servers start none;
* ``thread``: a thread in every web server even with a broker (several threads, or beat too, are
  safe: each due time is claimed once in the database, ``Schedules.claim``);
* ``off``: none here.

The thread fires what is due, then sleeps until the next due time, at most ``POLL_SECONDS`` (a
schedule added by another process is seen within that time). An error (the database unreachable) is
logged with its traceback and the loop goes on at the next poll.
"""

from __future__ import annotations

import logging
import threading
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Callable

from studio.records import utc_now
from studio.schedules import Firing, Schedules

if TYPE_CHECKING:
    from studio.service import Studio

log = logging.getLogger("studio.schedules")

POLL_SECONDS = 30.0
MODES = ("auto", "thread", "off")


class Scheduler:
    """Fires a studio's due schedules from a daemon thread. ``clock``: the current time (aware);
    tests give their own. ``fired`` lists every ``Firing`` so far; ``wait_for`` blocks until there
    are ``count`` of them."""

    def __init__(self, studio: "Studio", *, poll: float = POLL_SECONDS,
                 clock: Callable[[], datetime] = utc_now):
        # A weak reference: the thread must not keep alive a studio nothing else uses (a Streamlit
        # cache cleared, a test's studio); once it is gone the loop ends.
        self._studio = weakref.ref(studio)
        self.poll = float(poll)
        self.clock = clock
        self.fired: list[Firing] = []
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @property
    def schedules(self) -> Schedules | None:
        """The studio's schedules, or None once the studio is gone."""
        studio = self._studio()
        return Schedules(studio) if studio is not None else None

    def tick(self) -> list[Firing]:
        """Fire what is due now (``Schedules.run_due``); returns the firings of this tick."""
        schedules = self.schedules
        if schedules is None:
            self._stop.set()
            return []
        firings = schedules.run_due(self.clock())
        with self._changed:
            self.fired.extend(firings)
            self._changed.notify_all()
        return firings

    def delay(self) -> float:
        """Seconds to sleep before the next tick: until the next due time, at most ``poll``."""
        schedules = self.schedules
        upcoming = schedules.next_due() if schedules is not None else None
        if upcoming is None:
            return self.poll
        return min(self.poll, max(0.0, (upcoming - self.clock()).total_seconds()))

    def run(self) -> None:
        """The loop: tick, sleep, until ``stop``. Never lets an error end it (each is logged)."""
        delay = 0.0
        while not self._stop.wait(delay):
            try:
                self.tick()
                if self._stop.is_set():  # the studio is gone
                    return
                delay = self.delay()
            except Exception:  # the database may be back at the next poll: logged, not hidden
                log.exception("schedules: could not look at the schedules; trying again in %.0f s", self.poll)
                delay = self.poll

    def start(self) -> "Scheduler":
        """Start the polling thread (daemon) unless it runs already; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.run, name="studio-scheduler", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float | None = 5.0) -> None:
        """Ask the thread to stop and wait up to ``timeout`` seconds (None: until it ends); a firing
        in progress finishes first."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait_for(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` firings happened; False after ``timeout`` seconds."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self.fired) >= count, timeout)


_lock = threading.Lock()


def wants_thread(settings) -> bool:
    """Does ``Settings.scheduler`` ask for a scheduler thread in the web servers?"""
    mode = getattr(settings, "scheduler", "auto")
    return mode == "thread" or (mode == "auto" and not settings.broker_url)


def start_scheduler(studio: "Studio") -> Scheduler | None:
    """Start the studio's scheduler thread once per studio (kept on it) when its settings ask for
    one (``wants_thread``); returns it, or None when beat or nobody fires the schedules here."""
    if not wants_thread(studio.settings):
        return None
    with _lock:
        scheduler = studio.__dict__.get("_scheduler")
        if scheduler is None:
            scheduler = studio.__dict__["_scheduler"] = Scheduler(studio).start()
            log.info("schedules: fired by a thread in this process (STUDIO_SCHEDULER=%s)", studio.settings.scheduler)
        return scheduler


__all__ = ["MODES", "POLL_SECONDS", "Scheduler", "start_scheduler", "wants_thread"]
