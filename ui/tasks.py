"""Long work in the background: it never freezes the page and it survives a refresh.

A click starts the work in a thread registered in one process-wide ``TaskRegistry``
(``st.cache_resource``). The page keeps only the task's id — in ``st.session_state`` and in the URL
(``?task=``) — and a fragment that reruns every half second shows its progress. A refresh (a new
browser session) finds the id in the URL and re-attaches: the thread never stopped. Tasks belong to
an owner; an id from someone else's URL shows nothing.

Finished tasks are kept for an hour (so a late refresh still shows the result), then forgotten;
their images are in the history anyway.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import streamlit as st

from studio.errors import ProviderFailure, StudioError
from studio.types import ProgressEvent
from studio.usertext import markdown_literal

LOG = logging.getLogger("image_studio.ui")
TASK_PARAM = "task"
POLL_SECONDS = 0.5
KEEP_FINISHED_SECONDS = 3600
MAX_RUNNING_PER_OWNER = 3

RUNNING, DONE, FAILED, CANCELLED = "running", "done", "failed", "cancelled"

Work = Callable[[Callable[[ProgressEvent], None], threading.Event], Any]


@dataclass
class Task:
    id: str
    owner: str
    page: str  # which page started it (a page only re-attaches its own tasks)
    label: str
    started_at: float = field(default_factory=time.time)
    status: str = RUNNING
    fraction: float = 0.0
    stage: str = "queued"
    message: str = ""
    step: int | None = None
    total_steps: int | None = None
    result: Any = None
    error: StudioError | None = None
    finished_at: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    @property
    def elapsed(self) -> float:
        return (self.finished_at or time.time()) - self.started_at

    def progress_text(self) -> str:
        parts = [self.label, self.stage]
        if self.step is not None and self.total_steps:
            parts.append(f"step {self.step}/{self.total_steps}")
        if self.message and self.message not in parts:
            parts.append(self.message)
        parts.append(f"{self.elapsed:.0f}s")
        return " · ".join(p for p in parts if p)


class TaskRegistry:
    """Every background task of this server process."""

    def __init__(self, max_running_per_owner: int = MAX_RUNNING_PER_OWNER):
        self.max_running_per_owner = max_running_per_owner
        self._tasks: dict[str, Task] = {}
        self._lock = threading.Lock()

    def submit(self, owner: str, page: str, label: str, work: Work) -> Task:
        """Run ``work(progress, cancel)`` in a thread; its return value becomes ``task.result``."""
        with self._lock:
            self._prune()
            running = [t for t in self._tasks.values() if t.owner == owner and t.running]
            if len(running) >= self.max_running_per_owner:
                from studio.errors import RateLimited

                raise RateLimited(f"{len(running)} of your requests are still running; wait for one to finish "
                                  "(or cancel it) before starting another")
            task = Task(id=secrets.token_hex(16), owner=owner, page=page, label=label)
            self._tasks[task.id] = task
        thread = threading.Thread(target=self._run, args=(task, work), name=f"studio-task-{task.id[:8]}",
                                  daemon=True)
        thread.start()
        return task

    def _run(self, task: Task, work: Work) -> None:
        def progress(event: ProgressEvent) -> None:
            fraction = min(1.0, event.fraction)
            # A model's first-use download has a bar of its own (0-100 %); the request's progress
            # starts again from where it really is once the download is over.
            leaving_download = task.stage == "downloading" and event.stage != "downloading"
            task.fraction = fraction if leaving_download else max(task.fraction, fraction)
            task.stage = event.stage
            task.message = event.message
            if event.step is not None:  # later stages (saving) keep showing how far the steps got
                task.step, task.total_steps = event.step, event.total_steps

        task.stage = "starting"
        try:
            task.result = work(progress, task.cancel)
            task.status = DONE
            task.fraction = 1.0
        except StudioError as error:
            task.error = error
            task.status = CANCELLED if error.kind == "cancelled" else FAILED
        except Exception as exc:  # a bug, not a provider answer: log it fully, show one line
            LOG.exception("task %s failed", task.id)
            task.error = ProviderFailure(f"unexpected error: {type(exc).__name__}: {exc}")
            task.status = FAILED
        finally:
            task.finished_at = time.time()

    def get(self, task_id: str | None, owner: str) -> Task | None:
        if not task_id:
            return None
        with self._lock:
            task = self._tasks.get(task_id)
        return task if task is not None and task.owner == owner else None

    def for_owner(self, owner: str, *, running_only: bool = False) -> list[Task]:
        with self._lock:
            tasks = [t for t in self._tasks.values() if t.owner == owner and (t.running or not running_only)]
        return sorted(tasks, key=lambda t: t.started_at, reverse=True)

    def _prune(self) -> None:
        cutoff = time.time() - KEEP_FINISHED_SECONDS
        for task_id in [i for i, t in self._tasks.items() if t.finished_at and t.finished_at < cutoff]:
            del self._tasks[task_id]


@st.cache_resource(show_spinner=False)
def registry() -> TaskRegistry:
    return TaskRegistry()


# -- the page side -------------------------------------------------------------------------------


def _state_key(page: str) -> str:
    return f"_task_{page}"


def start(ctx, page: str, label: str, work: Work) -> Task:
    """Start ``work`` for this session's user and remember it for ``page`` (session and URL)."""
    task = registry().submit(ctx.user, page, label, work)
    st.session_state[_state_key(page)] = task.id
    st.query_params[TASK_PARAM] = task.id
    return task


def sync(ctx) -> None:
    """Run by ``setup`` before anything is drawn: re-attach a task named in the URL (after a refresh)
    and put the images of finished tasks into the session gallery, once each."""
    from_url = registry().get(st.query_params.get(TASK_PARAM), ctx.user)
    if from_url is not None and _state_key(from_url.page) not in st.session_state:
        st.session_state[_state_key(from_url.page)] = from_url.id
    delivered = st.session_state.setdefault("_tasks_delivered", set())
    for name in [k for k in st.session_state if str(k).startswith("_task_")]:
        task = registry().get(st.session_state[name], ctx.user)
        if task is not None and task.status == DONE and task.id not in delivered:
            delivered.add(task.id)
            ctx.gallery.add([image.id for image in result_images(task.result)])


def current(ctx, page: str) -> Task | None:
    """This page's latest task (kept in the session and mirrored in the URL)."""
    task = registry().get(st.session_state.get(_state_key(page)), ctx.user)
    if task is not None and st.query_params.get(TASK_PARAM) != task.id:
        st.query_params[TASK_PARAM] = task.id
    return task


def result_images(result: Any) -> list:
    """The image records in a task's result (a GenerationResult or a list of records)."""
    if result is None:
        return []
    images = getattr(result, "images", result)
    return list(images) if isinstance(images, (list, tuple)) else []


@st.fragment(run_every=POLL_SECONDS)
def _poll(task_id: str, owner: str) -> None:
    task = registry().get(task_id, owner)
    if task is None or not task.running:
        st.rerun()  # the whole page redraws once, with the result or the error
    st.progress(task.fraction, text=markdown_literal(task.progress_text()))  # the label quotes the prompt
    st.button("Cancel", key=f"cancel_{task_id}", on_click=task.cancel.set, disabled=task.cancel.is_set())


def show_progress(task: Task) -> None:
    """While the task runs: a progress bar that refreshes itself, and a Cancel button."""
    if task.running:
        _poll(task.id, task.owner)
