"""Where jobs are kept: the ``JobStore`` interface and its SQLite implementation.

The SQLite store keeps its own two tables (``jobs``, ``job_items``, made by the index's migrations,
``studio/migrations``) in the studio's ``index.sqlite3``, through the index's connections (WAL, one
connection per thread, writers take the lock up front), so a job and the images it made live in one
database file that is backed up together. A deployment that outgrows one machine implements the same
methods on PostgreSQL and runs items on Celery workers (see ``studio.jobs.runner``).

Every change a worker makes to an item names the attempt's ``request_id``: a worker that lost its
item (cancelled, or taken over after its process was presumed dead) cannot overwrite it.
"""

from __future__ import annotations

import json
import sqlite3
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import Any, Iterable

from studio.jobs.model import ACTIVE, TERMINAL, ItemStatus, Job, JobItem, JobStatus
from studio.storage.index import SQLiteIndex

_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in ACTIVE)
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in TERMINAL)
_JOB_FIELDS = {"status", "error", "runner", "heartbeat_at", "started_at", "finished_at", "webhook_url",
               "concurrency"}


def _job_assignments(fields: dict[str, Any]) -> tuple[str, list[Any]]:
    """``"status = ?, ..."`` and its values for an UPDATE of ``fields`` (plus ``updated_at``);
    ValueError for a field that is not a job's to change."""
    unknown = set(fields) - _JOB_FIELDS
    if unknown:
        raise ValueError(f"cannot update job fields {sorted(unknown)}")
    values = {k: (v.value if isinstance(v, JobStatus) else v) for k, v in fields.items()}
    values["updated_at"] = now_iso()
    return ", ".join(f"{name} = ?" for name in values), list(values.values())


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def attempt_request_id(job_id: str, index: int, attempt: int) -> str:
    """The request id of one attempt at one item: unique, and findable on the images it saves."""
    return f"{job_id}-{index}-{attempt}"


class JobStore(ABC):
    """Where jobs and their items are kept. Every method is safe to call from several threads
    (and, for a shared database, several processes)."""

    @abstractmethod
    def create(self, job: Job, items: list[JobItem]) -> None: ...

    @abstractmethod
    def get(self, job_id: str, *, items: bool = True) -> Job | None: ...

    @abstractmethod
    def list(self, owner: str | None, *, limit: int = 50, statuses: Iterable[JobStatus] | None = None) -> list[Job]: ...

    @abstractmethod
    def items(self, job_id: str, statuses: Iterable[ItemStatus] | None = None) -> list[JobItem]: ...

    @abstractmethod
    def update_job(self, job_id: str, **fields: Any) -> None: ...

    @abstractmethod
    def take(self, job_id: str, runner: str, *, now: float, stale_after: float, dead: str | None = None) -> bool:
        """Make ``runner`` the job's holder, with a fresh heartbeat (``now``, ``time.time()``
        seconds), in one compare-and-set: only when no one holds it, ``runner`` already does, the
        holder's heartbeat is older than ``stale_after`` seconds, or the holder is still ``dead``
        (a runner the caller found gone, e.g. its process on this host has exited). False, and
        nothing changed, when a live runner elsewhere holds it, including one that took it after
        the caller last read the job."""

    @abstractmethod
    def release(self, job_id: str, runner: str, **fields: Any) -> bool:
        """Let go of the job (holder cleared) and set ``fields`` (as ``update_job``), only while
        ``runner`` still holds it; False, and nothing changed, when another runner has taken it."""

    @abstractmethod
    def heartbeat(self, job_ids: list[str], runner: str, at: float) -> None: ...

    @abstractmethod
    def item(self, job_id: str, index: int) -> JobItem | None: ...

    @abstractmethod
    def claim(self, job_id: str, runner: str | None = None) -> JobItem | None:
        """The next PENDING item, now INITIALIZING with a new attempt and request id; None if none.
        With ``runner``, only while the job is RUNNING and held by that runner (checked in the same
        transaction): a pause, cancel or takeover written by any process stops new items at once."""

    @abstractmethod
    def has_pending(self, job_id: str) -> bool: ...

    @abstractmethod
    def set_stage(self, job_id: str, index: int, request_id: str, status: ItemStatus, progress: float) -> None: ...

    @abstractmethod
    def complete_item(self, job_id: str, index: int, request_id: str, image_ids: list[str], cost: float,
                      warnings: list[str] | None = None) -> bool:
        """The attempt ``request_id`` completed with ``image_ids``; ``warnings`` are kept apart from
        ``error`` (which a completed item never has). ``cost`` is what the attempt reported; the
        item's ``cost`` as read is what the audit log booked for all its attempts."""

    @abstractmethod
    def fail_item(self, job_id: str, index: int, request_id: str, status: ItemStatus, kind: str | None,
                  message: str | None) -> bool: ...

    @abstractmethod
    def requeue_item(self, job_id: str, index: int, request_id: str, message: str | None,
                     count_attempt: bool = True) -> bool: ...

    @abstractmethod
    def cancel(self, job_id: str, index: int | None = None) -> list[int]:
        """Cancel pending items (all, or ``index``) and flag active ones; returns the flagged indexes."""

    @abstractmethod
    def cancel_requests(self, job_id: str) -> list[tuple[int, str]]:
        """(index, request_id) of active items whose cancellation was asked for (by any process)."""

    @abstractmethod
    def reset(self, job_id: str, statuses: Iterable[ItemStatus], indexes: Iterable[int] | None = None) -> int:
        """Put items with ``statuses`` back to PENDING (retry); returns how many."""

    @abstractmethod
    def note_webhook(self, job_id: str, ok: bool, error: str | None) -> None: ...


class SQLiteJobStore(JobStore):
    def __init__(self, index: SQLiteIndex):
        self.index = index

    # -- jobs -------------------------------------------------------------------------------

    def create(self, job: Job, items: list[JobItem]) -> None:
        now = now_iso()
        job.created_at = job.updated_at = job.created_at or now
        with self.index.write() as conn:
            conn.execute(
                "INSERT INTO jobs (id, owner, status, provider, model, style, seed_policy, base_seed, concurrency, "
                "options, webhook_url, script_name, script_format, total, estimated_cost, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (job.id, job.owner, job.status.value, job.provider, job.model, job.style, job.seed_policy,
                 job.base_seed, job.concurrency, json.dumps(job.options, default=str), job.webhook_url,
                 job.script_name, job.script_format, len(items), job.estimated_cost, job.created_at,
                 job.updated_at))
            conn.executemany(
                "INSERT INTO job_items (job_id, idx, text, prompt, negative_prompt, timestamp, start_s, end_s, line, "
                "overrides, seed, status, estimated_cost, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [(job.id, item.index, item.text, item.prompt, item.negative_prompt, item.timestamp, item.start,
                  item.end, item.line, json.dumps(item.overrides), item.seed, ItemStatus.PENDING.value,
                  item.estimated_cost, now) for item in items])

    def get(self, job_id: str, *, items: bool = True) -> Job | None:
        row = self.index.connection().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        job = _job_from_row(row)
        self._fill_totals([job])
        if items:
            job.items = self.items(job_id)
        return job

    def list(self, owner: str | None, *, limit: int = 50, statuses: Iterable[JobStatus] | None = None) -> list[Job]:
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        if statuses is not None:
            values = [s.value for s in statuses]
            where.append(f"status IN ({', '.join('?' for _ in values)})")
            args += values
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        rows = self.index.connection().execute(
            f"SELECT * FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT ?", [*args, int(limit)]).fetchall()
        jobs = [_job_from_row(row) for row in rows]
        self._fill_totals(jobs)
        return jobs

    def _fill_totals(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        by_id = {job.id: job for job in jobs}
        marks = ", ".join("?" for _ in by_id)
        rows = self.index.connection().execute(
            f"SELECT job_id, status, COUNT(*) AS n, SUM(progress) AS progress "
            f"FROM job_items WHERE job_id IN ({marks}) GROUP BY job_id, status", list(by_id)).fetchall()
        done_progress: dict[str, float] = {}
        for job in jobs:
            job.cost = sum(self._booked(job.id).values())
        for row in self.index.connection().execute(
                f"SELECT job_id, warnings FROM job_items WHERE job_id IN ({marks}) AND warnings IS NOT NULL "
                f"ORDER BY job_id, idx", list(by_id)).fetchall():
            job = by_id[row["job_id"]]
            job.warnings += [w for w in json.loads(row["warnings"]) if w not in job.warnings]
        for row in rows:
            job = by_id[row["job_id"]]
            job.counts[row["status"]] = row["n"]
            terminal = ItemStatus(row["status"]).terminal
            done_progress[job.id] = done_progress.get(job.id, 0.0) + (100.0 * row["n"] if terminal
                                                                       else row["progress"] or 0.0)
        for job in jobs:
            job.progress = done_progress.get(job.id, 0.0) / job.total if job.total else 0.0

    def update_job(self, job_id: str, **fields: Any) -> None:
        assignments, values = _job_assignments(fields)
        with self.index.write() as conn:
            conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", [*values, job_id])

    def take(self, job_id: str, runner: str, *, now: float, stale_after: float, dead: str | None = None) -> bool:
        with self.index.write() as conn:
            cursor = conn.execute(
                "UPDATE jobs SET runner = ?, heartbeat_at = ?, updated_at = ? WHERE id = ? AND (runner IS NULL "
                "OR runner = ? OR runner = ? OR heartbeat_at IS NULL OR heartbeat_at < ?)",
                (runner, now, now_iso(), job_id, runner, dead, now - stale_after))
            return cursor.rowcount == 1

    def release(self, job_id: str, runner: str, **fields: Any) -> bool:
        assignments, values = _job_assignments({**fields, "runner": None})
        with self.index.write() as conn:
            cursor = conn.execute(f"UPDATE jobs SET {assignments} WHERE id = ? AND runner = ?",
                                  [*values, job_id, runner])
            return cursor.rowcount == 1

    def heartbeat(self, job_ids: list[str], runner: str, at: float) -> None:
        if not job_ids:
            return
        with self.index.write() as conn:
            conn.executemany("UPDATE jobs SET heartbeat_at = ? WHERE id = ? AND runner = ?",
                             [(at, job_id, runner) for job_id in job_ids])

    def note_webhook(self, job_id: str, ok: bool, error: str | None) -> None:
        with self.index.write() as conn:
            if ok:
                conn.execute("UPDATE jobs SET webhook_delivered = webhook_delivered + 1 WHERE id = ?", (job_id,))
            else:
                conn.execute("UPDATE jobs SET webhook_error = ? WHERE id = ?", (error, job_id))

    # -- items ------------------------------------------------------------------------------

    def items(self, job_id: str, statuses: Iterable[ItemStatus] | None = None) -> list[JobItem]:
        sql, args = "SELECT * FROM job_items WHERE job_id = ?", [job_id]
        if statuses is not None:
            values = [s.value for s in statuses]
            sql += f" AND status IN ({', '.join('?' for _ in values)})"
            args += values
        rows = self.index.connection().execute(sql + " ORDER BY idx", args).fetchall()
        booked = self._booked(job_id)
        return [_item_from_row(row, booked) for row in rows]

    def item(self, job_id: str, index: int) -> JobItem | None:
        row = self.index.connection().execute("SELECT * FROM job_items WHERE job_id = ? AND idx = ?",
                                              (job_id, index)).fetchone()
        return _item_from_row(row, self._booked(job_id)) if row else None

    def _booked(self, job_id: str) -> dict[int, float]:
        """USD booked in the audit log (``generations``) for each item of the job, over all its
        attempts: what was counted against the budget, including answers billed without an image and
        requests interrupted while possibly billed. Attempts' request ids are ``<job>-<index>-<n>``
        (``attempt_request_id``); read as one range of the log's key."""
        rows = self.index.connection().execute(
            "SELECT id, cost FROM generations WHERE id >= ? AND id < ?", (f"{job_id}-", f"{job_id}.")).fetchall()
        booked: dict[int, float] = {}
        for row in rows:
            owner_job, index, attempt = row["id"].rsplit("-", 2)
            if owner_job == job_id and index.isdigit() and attempt.isdigit():
                booked[int(index)] = booked.get(int(index), 0.0) + float(row["cost"] or 0.0)
        return booked

    def claim(self, job_id: str, runner: str | None = None) -> JobItem | None:
        now = now_iso()
        with self.index.write() as conn:
            if runner is not None and conn.execute(
                    "SELECT 1 FROM jobs WHERE id = ? AND status = ? AND runner = ?",
                    (job_id, JobStatus.RUNNING.value, runner)).fetchone() is None:
                return None
            row = conn.execute("SELECT idx, attempts FROM job_items WHERE job_id = ? AND status = ? "
                               "ORDER BY idx LIMIT 1", (job_id, ItemStatus.PENDING.value)).fetchone()
            if row is None:
                return None
            attempt = row["attempts"] + 1
            request_id = attempt_request_id(job_id, row["idx"], attempt)
            conn.execute(
                "UPDATE job_items SET status = ?, attempts = ?, request_id = ?, progress = 0, error = NULL, "
                "error_kind = NULL, warnings = NULL, started_at = ?, updated_at = ?, finished_at = NULL "
                "WHERE job_id = ? AND idx = ?",
                (ItemStatus.INITIALIZING.value, attempt, request_id, now, now, job_id, row["idx"]))
            claimed = conn.execute("SELECT * FROM job_items WHERE job_id = ? AND idx = ?",
                                   (job_id, row["idx"])).fetchone()
        return _item_from_row(claimed, self._booked(job_id))

    def has_pending(self, job_id: str) -> bool:
        row = self.index.connection().execute("SELECT 1 FROM job_items WHERE job_id = ? AND status = ? LIMIT 1",
                                              (job_id, ItemStatus.PENDING.value)).fetchone()
        return row is not None

    def _update_active(self, job_id: str, index: int, request_id: str, assignments: str, args: list[Any]) -> bool:
        with self.index.write() as conn:
            cursor = conn.execute(
                f"UPDATE job_items SET {assignments}, updated_at = ? WHERE job_id = ? AND idx = ? "
                f"AND request_id = ? AND status IN ({_ACTIVE_SQL})", [*args, now_iso(), job_id, index, request_id])
            return cursor.rowcount == 1

    def set_stage(self, job_id: str, index: int, request_id: str, status: ItemStatus, progress: float) -> None:
        self._update_active(job_id, index, request_id, "status = ?, progress = ?", [status.value, progress])

    def complete_item(self, job_id: str, index: int, request_id: str, image_ids: list[str], cost: float,
                      warnings: list[str] | None = None) -> bool:
        return self._update_active(
            job_id, index, request_id, "status = ?, progress = 100, image_ids = ?, cost = ?, error = NULL, "
            "error_kind = NULL, warnings = ?, finished_at = ?, cancel_requested = 0",
            [ItemStatus.COMPLETED.value, json.dumps(image_ids), cost, json.dumps(list(warnings or [])), now_iso()])

    def fail_item(self, job_id: str, index: int, request_id: str, status: ItemStatus, kind: str | None,
                  message: str | None) -> bool:
        return self._update_active(
            job_id, index, request_id, "status = ?, error = ?, error_kind = ?, finished_at = ?, cancel_requested = 0",
            [status.value, message, kind, now_iso()])

    def requeue_item(self, job_id: str, index: int, request_id: str, message: str | None,
                     count_attempt: bool = True) -> bool:
        refund = "" if count_attempt else ", attempts = attempts - 1"
        return self._update_active(
            job_id, index, request_id, f"status = ?, progress = 0, error = ?{refund}",
            [ItemStatus.PENDING.value, message])

    def cancel(self, job_id: str, index: int | None = None) -> list[int]:
        now = now_iso()
        where, args = "job_id = ?", [job_id]
        if index is not None:
            where += " AND idx = ?"
            args.append(index)
        with self.index.write() as conn:
            conn.execute(f"UPDATE job_items SET status = ?, finished_at = ?, updated_at = ? "
                         f"WHERE {where} AND status = ?",
                         [ItemStatus.CANCELLED.value, now, now, *args, ItemStatus.PENDING.value])
            rows = conn.execute(f"SELECT idx FROM job_items WHERE {where} AND status IN ({_ACTIVE_SQL})",
                                args).fetchall()
            conn.execute(f"UPDATE job_items SET cancel_requested = 1 WHERE {where} AND status IN ({_ACTIVE_SQL})",
                         args)
        return [row["idx"] for row in rows]

    def cancel_requests(self, job_id: str) -> list[tuple[int, str]]:
        rows = self.index.connection().execute(
            f"SELECT idx, request_id FROM job_items WHERE job_id = ? AND cancel_requested = 1 "
            f"AND status IN ({_ACTIVE_SQL})", (job_id,)).fetchall()
        return [(row["idx"], row["request_id"]) for row in rows]

    def reset(self, job_id: str, statuses: Iterable[ItemStatus], indexes: Iterable[int] | None = None) -> int:
        values = [s.value for s in statuses]
        sql = (f"UPDATE job_items SET status = ?, progress = 0, finished_at = NULL, cancel_requested = 0, "
               f"updated_at = ? WHERE job_id = ? AND status IN ({', '.join('?' for _ in values)})")
        args: list[Any] = [ItemStatus.PENDING.value, now_iso(), job_id, *values]
        if indexes is not None:
            wanted = [int(i) for i in indexes]
            if not wanted:
                return 0
            sql += f" AND idx IN ({', '.join('?' for _ in wanted)})"
            args += wanted
        with self.index.write() as conn:
            return conn.execute(sql, args).rowcount


def _job_from_row(row: sqlite3.Row) -> Job:
    data = dict(row)
    data["status"] = JobStatus(data["status"])
    data["options"] = json.loads(data["options"] or "{}")
    return Job(**data)


def _item_from_row(row: sqlite3.Row, booked: dict[int, float]) -> JobItem:
    """An item from its row; its cost is ``booked[index]`` (the audit log's, see ``_booked``)."""
    data = dict(row)
    return JobItem(
        job_id=data["job_id"], index=data["idx"], text=data["text"], prompt=data["prompt"],
        negative_prompt=data["negative_prompt"], timestamp=data["timestamp"], start=data["start_s"],
        end=data["end_s"], line=data["line"], overrides=json.loads(data["overrides"] or "{}"), seed=data["seed"],
        status=ItemStatus(data["status"]), progress=data["progress"], attempts=data["attempts"],
        request_id=data["request_id"], error=data["error"], error_kind=data["error_kind"],
        warnings=json.loads(data.get("warnings") or "[]"), cost=booked.get(data["idx"], 0.0),
        estimated_cost=data["estimated_cost"], image_ids=json.loads(data["image_ids"] or "[]"),
        cancel_requested=bool(data["cancel_requested"]), created_at=data["created_at"],
        started_at=data["started_at"], updated_at=data["updated_at"], finished_at=data["finished_at"])
