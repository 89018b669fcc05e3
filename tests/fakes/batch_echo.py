"""The echo provider for batch crash tests in a separate ``python -m studio`` process.

``STUDIO_PROVIDER_PLUGINS=echo=tests.fakes.batch_echo:CountingEcho`` makes it the ``echo`` provider.
- ``ECHO_LATENCY``: seconds per call (as for ``CatalogedEchoProvider``);
- ``ECHO_CALL_LOG``: a file that gets one line per provider call (the scene's prompt), appended
  atomically, so calls are counted across the killed process and the one that resumes;
- ``ECHO_HOLD_FROM=N``: the Nth provider call of this process, and every later one, waits until
  the file ``ECHO_RELEASE_FILE`` exists (if that is not set: forever), or its item is cancelled,
  or the process is killed; so a test decides when the process is mid-job, whatever the load;
- ``ECHO_CRASH_ON_SAVE=N``: the process dies (``os._exit``, like SIGKILL: no cleanup) on the Nth
  time the core commits a generation's rows, i.e. after that request's image files are written and
  before its rows exist. The prompt of that request is written to ``ECHO_CRASH_LOG``.
"""

from __future__ import annotations

import itertools
import os
import threading

from studio.storage.index import SQLiteIndex
from tests.fakes.echo_provider import CatalogedEchoProvider

_saves = 0
_saves_lock = threading.Lock()
_call_numbers = itertools.count(1)  # next() is atomic under the GIL


class CountingEcho(CatalogedEchoProvider):
    def generate(self, request, ctx):
        log = os.environ.get("ECHO_CALL_LOG")
        if log:
            fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, (request.user_prompt + "\n").encode("utf-8"))
            finally:
                os.close(fd)
        hold_from = int(os.environ.get("ECHO_HOLD_FROM") or 0)
        if hold_from and next(_call_numbers) >= hold_from:
            release = os.environ.get("ECHO_RELEASE_FILE")
            pause = threading.Event()  # never set: only a timed wait between looks
            while not (release and os.path.exists(release)):
                ctx.check_cancelled()
                pause.wait(0.05)
        return super().generate(request, ctx)


def _crash_on_save() -> None:
    target = int(os.environ["ECHO_CRASH_ON_SAVE"])
    original = SQLiteIndex.finish_generation

    def finish_generation(self, reservation_id, records, generation):
        global _saves
        with _saves_lock:
            _saves += 1
            crash = _saves == target
        if crash:
            with open(os.environ["ECHO_CRASH_LOG"], "w", encoding="utf-8") as fh:
                fh.write(generation["prompt"])
            os._exit(137)
        return original(self, reservation_id, records, generation)

    SQLiteIndex.finish_generation = finish_generation


if os.environ.get("ECHO_CRASH_ON_SAVE"):
    _crash_on_save()

PLUGIN_SPEC = "echo=tests.fakes.batch_echo:CountingEcho"
