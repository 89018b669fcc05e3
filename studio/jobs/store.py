"""Where jobs are kept: the ``JobStore`` interface and its implementation on the studio's database.

``DatabaseJobStore`` keeps its two tables (``jobs``, ``job_items``, made by the migrations,
``studio/migrations``) in the history index's database (``studio.db``: ``index.sqlite3`` in the data
directory, or PostgreSQL), with the same portable SQL on both, so a job and the images it made live
in one database that is backed up together. Batch items run on this process's threads or on Celery
workers (see ``studio.jobs.runner``); either way every worker claims through this store.

Every change a worker makes to an item names the attempt's ``request_id``: a worker that lost its
item (cancelled, or taken over after its process was presumed dead) cannot overwrite it.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable, Mapping

from studio.jobs.model import ACTIVE, TERMINAL, ItemStatus, Job, JobItem, JobStatus
from studio.storage.index import HistoryIndex, expanding, sql

if TYPE_CHECKING:
    import sqlalchemy as sa

_ACTIVE_SQL = ", ".join(f"'{s.value}'" for s in ACTIVE)
_TERMINAL_SQL = ", ".join(f"'{s.value}'" for s in TERMINAL)
_JOB_FIELDS = {"status", "error", "runner", "heartbeat_at", "started_at", "finished_at", "webhook_url",
               "concurrency"}


def _job_assignments(fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``"status = :status, ..."`` and its parameters for an UPDATE of ``fields`` (plus
    ``updated_at``); ValueError for a field that is not a job's to change."""
    unknown = set(fields) - _JOB_FIELDS
    if unknown:
        raise ValueError(f"cannot update job fields {sorted(unknown)}")
    values = {k: (v.value if isinstance(v, JobStatus) else v) for k, v in fields.items()}
    values["updated_at"] = now_iso()
    return ", ".join(f"{name} = :{name}" for name in values), values


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


class DatabaseJobStore(JobStore):
    """Jobs in the studio's database (the history index's ``Database``: SQLite or PostgreSQL, one
    SQL). ``claim`` picks the next pending item with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (two
    workers never get one item, and neither waits for the other); on SQLite the write transaction
    already excludes every other writer."""

    def __init__(self, index: HistoryIndex):
        self.index = index
        self.db = index.db

    def _rows(self, statement: "sa.TextClause", params: dict[str, Any]) -> list[Any]:
        with self.db.read() as conn:
            return conn.execute(statement, params).mappings().all()

    # -- jobs -------------------------------------------------------------------------------

    def create(self, job: Job, items: list[JobItem]) -> None:
        now = now_iso()
        job.created_at = job.updated_at = job.created_at or now
        with self.db.write() as conn:
            conn.execute(
                sql("INSERT INTO jobs (id, owner, status, provider, model, style, seed_policy, base_seed, concurrency, "
                    "options, webhook_url, script_name, script_format, total, estimated_cost, created_at, updated_at) "
                    "VALUES (:id, :owner, :status, :provider, :model, :style, :seed_policy, :base_seed, :concurrency, "
                    ":options, :webhook_url, :script_name, :script_format, :total, :estimated_cost, :created_at, "
                    ":updated_at)"),
                {"id": job.id, "owner": job.owner, "status": job.status.value, "provider": job.provider,
                 "model": job.model, "style": job.style, "seed_policy": job.seed_policy, "base_seed": job.base_seed,
                 "concurrency": job.concurrency, "options": json.dumps(job.options, default=str),
                 "webhook_url": job.webhook_url, "script_name": job.script_name, "script_format": job.script_format,
                 "total": len(items), "estimated_cost": job.estimated_cost, "created_at": job.created_at,
                 "updated_at": job.updated_at})
            if items:
                conn.execute(
                    sql("INSERT INTO job_items (job_id, idx, text, prompt, negative_prompt, timestamp, start_s, end_s, "
                        "line, overrides, seed, status, estimated_cost, created_at) VALUES (:job_id, :idx, :text, "
                        ":prompt, :negative_prompt, :timestamp, :start_s, :end_s, :line, :overrides, :seed, :status, "
                        ":estimated_cost, :created_at)"),
                    [{"job_id": job.id, "idx": item.index, "text": item.text, "prompt": item.prompt,
                      "negative_prompt": item.negative_prompt, "timestamp": item.timestamp, "start_s": item.start,
                      "end_s": item.end, "line": item.line, "overrides": json.dumps(item.overrides),
                      "seed": item.seed, "status": ItemStatus.PENDING.value, "estimated_cost": item.estimated_cost,
                      "created_at": now} for item in items])

    def get(self, job_id: str, *, items: bool = True) -> Job | None:
        rows = self._rows(sql("SELECT * FROM jobs WHERE id = :id"), {"id": job_id})
        if not rows:
            return None
        job = _job_from_row(rows[0])
        self._fill_totals([job])
        if items:
            job.items = self.items(job_id)
        return job

    def list(self, owner: str | None, *, limit: int = 50, statuses: Iterable[JobStatus] | None = None) -> list[Job]:
        where, args = [], {"limit": int(limit)}
        if owner is not None:
            where.append("owner = :owner")
            args["owner"] = owner
        if statuses is not None:
            args["statuses"] = [s.value for s in statuses]
            if not args["statuses"]:
                return []
            where.append("status IN :statuses")
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        statement = f"SELECT * FROM jobs {clause} ORDER BY created_at DESC, id DESC LIMIT :limit"
        rows = self._rows(expanding(statement, "statuses") if statuses is not None else sql(statement), args)
        jobs = [_job_from_row(row) for row in rows]
        self._fill_totals(jobs)
        return jobs

    def _fill_totals(self, jobs: list[Job]) -> None:
        if not jobs:
            return
        by_id = {job.id: job for job in jobs}
        ids = {"ids": list(by_id)}
        rows = self._rows(expanding("SELECT job_id, status, COUNT(*) AS n, SUM(progress) AS progress "
                                    "FROM job_items WHERE job_id IN :ids GROUP BY job_id, status", "ids"), ids)
        done_progress: dict[str, float] = {}
        for job in jobs:
            job.cost = sum(self._booked(job.id).values())
        for row in self._rows(expanding("SELECT job_id, warnings FROM job_items WHERE job_id IN :ids "
                                        "AND warnings IS NOT NULL ORDER BY job_id, idx", "ids"), ids):
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
        with self.db.write() as conn:
            conn.execute(sql(f"UPDATE jobs SET {assignments} WHERE id = :job_id"), {**values, "job_id": job_id})

    def take(self, job_id: str, runner: str, *, now: float, stale_after: float, dead: str | None = None) -> bool:
        # One UPDATE whose condition is the compare: PostgreSQL re-checks it on the row it waited for.
        with self.db.write() as conn:
            result = conn.execute(
                sql("UPDATE jobs SET runner = :runner, heartbeat_at = :now, updated_at = :updated_at WHERE id = :id "
                    "AND (runner IS NULL OR runner = :runner OR runner = :dead OR heartbeat_at IS NULL "
                    "OR heartbeat_at < :stale)"),
                {"runner": runner, "now": now, "updated_at": now_iso(), "id": job_id, "dead": dead,
                 "stale": now - stale_after})
            return result.rowcount == 1

    def release(self, job_id: str, runner: str, **fields: Any) -> bool:
        assignments, values = _job_assignments({**fields, "runner": None})
        with self.db.write() as conn:
            result = conn.execute(sql(f"UPDATE jobs SET {assignments} WHERE id = :job_id AND runner = :holder"),
                                  {**values, "job_id": job_id, "holder": runner})
            return result.rowcount == 1

    def heartbeat(self, job_ids: list[str], runner: str, at: float) -> None:
        if not job_ids:
            return
        with self.db.write() as conn:
            conn.execute(sql("UPDATE jobs SET heartbeat_at = :at WHERE id = :id AND runner = :runner"),
                         [{"at": at, "id": job_id, "runner": runner} for job_id in job_ids])

    def note_webhook(self, job_id: str, ok: bool, error: str | None) -> None:
        with self.db.write() as conn:
            if ok:
                conn.execute(sql("UPDATE jobs SET webhook_delivered = webhook_delivered + 1 WHERE id = :id"),
                             {"id": job_id})
            else:
                conn.execute(sql("UPDATE jobs SET webhook_error = :error WHERE id = :id"),
                             {"error": error, "id": job_id})

    # -- items ------------------------------------------------------------------------------

    def items(self, job_id: str, statuses: Iterable[ItemStatus] | None = None) -> list[JobItem]:
        statement, args = "SELECT * FROM job_items WHERE job_id = :job_id", {"job_id": job_id}
        if statuses is not None:
            args["statuses"] = [s.value for s in statuses]
            if not args["statuses"]:
                return []
            statement += " AND status IN :statuses"
        statement += " ORDER BY idx"
        rows = self._rows(expanding(statement, "statuses") if statuses is not None else sql(statement), args)
        booked = self._booked(job_id)
        return [_item_from_row(row, booked) for row in rows]

    def item(self, job_id: str, index: int) -> JobItem | None:
        rows = self._rows(sql("SELECT * FROM job_items WHERE job_id = :job_id AND idx = :idx"),
                          {"job_id": job_id, "idx": index})
        return _item_from_row(rows[0], self._booked(job_id)) if rows else None

    def _booked(self, job_id: str) -> dict[int, float]:
        """USD booked in the audit log (``generations``) for each item of the job, over all its
        attempts: what was counted against the budget, including answers billed without an image and
        requests interrupted while possibly billed. Attempts' request ids are ``<job>-<index>-<n>``
        (``attempt_request_id``); read as one range of the log's key."""
        rows = self._rows(sql("SELECT id, cost FROM generations WHERE id >= :low AND id < :high"),
                          {"low": f"{job_id}-", "high": f"{job_id}."})
        booked: dict[int, float] = {}
        for row in rows:
            owner_job, index, attempt = row["id"].rsplit("-", 2)
            if owner_job == job_id and index.isdigit() and attempt.isdigit():
                booked[int(index)] = booked.get(int(index), 0.0) + float(row["cost"] or 0.0)
        return booked

    def claim(self, job_id: str, runner: str | None = None) -> JobItem | None:
        now = now_iso()
        with self.db.write() as conn:
            # The job row is share-locked on PostgreSQL: a pause, cancel or takeover (an UPDATE of it)
            # waits for this claim, and the claim never sees a job that has just stopped.
            if runner is not None and conn.execute(
                    sql("SELECT 1 FROM jobs WHERE id = :id AND status = :status AND runner = :runner"
                        + self.db.for_update(share=True)),
                    {"id": job_id, "status": JobStatus.RUNNING.value, "runner": runner}).first() is None:
                return None
            row = conn.execute(
                sql("SELECT idx, attempts FROM job_items WHERE job_id = :job_id AND status = :status "
                    "ORDER BY idx LIMIT 1" + self.db.for_update(skip_locked=True)),
                {"job_id": job_id, "status": ItemStatus.PENDING.value}).mappings().first()
            if row is None:
                return None
            attempt = row["attempts"] + 1
            request_id = attempt_request_id(job_id, row["idx"], attempt)
            conn.execute(
                sql("UPDATE job_items SET status = :status, attempts = :attempts, request_id = :request_id, "
                    "progress = 0, error = NULL, error_kind = NULL, warnings = NULL, started_at = :now, "
                    "updated_at = :now, finished_at = NULL WHERE job_id = :job_id AND idx = :idx"),
                {"status": ItemStatus.INITIALIZING.value, "attempts": attempt, "request_id": request_id, "now": now,
                 "job_id": job_id, "idx": row["idx"]})
            claimed = conn.execute(sql("SELECT * FROM job_items WHERE job_id = :job_id AND idx = :idx"),
                                   {"job_id": job_id, "idx": row["idx"]}).mappings().first()
        return _item_from_row(claimed, self._booked(job_id))

    def has_pending(self, job_id: str) -> bool:
        rows = self._rows(sql("SELECT 1 FROM job_items WHERE job_id = :job_id AND status = :status LIMIT 1"),
                          {"job_id": job_id, "status": ItemStatus.PENDING.value})
        return bool(rows)

    def _update_active(self, job_id: str, index: int, request_id: str, assignments: str, args: dict[str, Any]) -> bool:
        with self.db.write() as conn:
            result = conn.execute(
                sql(f"UPDATE job_items SET {assignments}, updated_at = :updated_at WHERE job_id = :job_id "
                    f"AND idx = :idx AND request_id = :request_id AND status IN ({_ACTIVE_SQL})"),
                {**args, "updated_at": now_iso(), "job_id": job_id, "idx": index, "request_id": request_id})
            return result.rowcount == 1

    def set_stage(self, job_id: str, index: int, request_id: str, status: ItemStatus, progress: float) -> None:
        self._update_active(job_id, index, request_id, "status = :status, progress = :progress",
                            {"status": status.value, "progress": progress})

    def complete_item(self, job_id: str, index: int, request_id: str, image_ids: list[str], cost: float,
                      warnings: list[str] | None = None) -> bool:
        return self._update_active(
            job_id, index, request_id, "status = :status, progress = 100, image_ids = :image_ids, cost = :cost, "
            "error = NULL, error_kind = NULL, warnings = :warnings, finished_at = :finished_at, cancel_requested = 0",
            {"status": ItemStatus.COMPLETED.value, "image_ids": json.dumps(image_ids), "cost": cost,
             "warnings": json.dumps(list(warnings or [])), "finished_at": now_iso()})

    def fail_item(self, job_id: str, index: int, request_id: str, status: ItemStatus, kind: str | None,
                  message: str | None) -> bool:
        return self._update_active(
            job_id, index, request_id, "status = :status, error = :error, error_kind = :error_kind, "
            "finished_at = :finished_at, cancel_requested = 0",
            {"status": status.value, "error": message, "error_kind": kind, "finished_at": now_iso()})

    def requeue_item(self, job_id: str, index: int, request_id: str, message: str | None,
                     count_attempt: bool = True) -> bool:
        refund = "" if count_attempt else ", attempts = attempts - 1"
        return self._update_active(job_id, index, request_id, f"status = :status, progress = 0, error = :error{refund}",
                                   {"status": ItemStatus.PENDING.value, "error": message})

    def cancel(self, job_id: str, index: int | None = None) -> list[int]:
        now = now_iso()
        where, args = "job_id = :job_id", {"job_id": job_id}
        if index is not None:
            where += " AND idx = :idx"
            args["idx"] = index
        with self.db.write() as conn:
            conn.execute(sql(f"UPDATE job_items SET status = :cancelled, finished_at = :now, updated_at = :now "
                             f"WHERE {where} AND status = :pending"),
                         {**args, "cancelled": ItemStatus.CANCELLED.value, "now": now,
                          "pending": ItemStatus.PENDING.value})
            # RETURNING: the rows flagged are the ones reported, even with another writer in between.
            flagged = conn.execute(sql(f"UPDATE job_items SET cancel_requested = 1 WHERE {where} "
                                       f"AND status IN ({_ACTIVE_SQL}) RETURNING idx"), args).scalars().all()
        return sorted(flagged)

    def cancel_requests(self, job_id: str) -> list[tuple[int, str]]:
        rows = self._rows(sql(f"SELECT idx, request_id FROM job_items WHERE job_id = :job_id AND cancel_requested = 1 "
                              f"AND status IN ({_ACTIVE_SQL}) ORDER BY idx"), {"job_id": job_id})
        return [(row["idx"], row["request_id"]) for row in rows]

    def reset(self, job_id: str, statuses: Iterable[ItemStatus], indexes: Iterable[int] | None = None) -> int:
        values = [s.value for s in statuses]
        if not values:
            return 0
        statement = ("UPDATE job_items SET status = :pending, progress = 0, finished_at = NULL, cancel_requested = 0, "
                     "updated_at = :now WHERE job_id = :job_id AND status IN :statuses")
        args: dict[str, Any] = {"pending": ItemStatus.PENDING.value, "now": now_iso(), "job_id": job_id,
                                "statuses": values}
        names = ["statuses"]
        if indexes is not None:
            wanted = [int(i) for i in indexes]
            if not wanted:
                return 0
            statement += " AND idx IN :indexes"
            args["indexes"] = wanted
            names.append("indexes")
        with self.db.write() as conn:
            return conn.execute(expanding(statement, *names), args).rowcount


# The name this store had while it was SQLite only.
SQLiteJobStore = DatabaseJobStore


def _job_from_row(row: Mapping[str, Any]) -> Job:
    data = dict(row)
    data["status"] = JobStatus(data["status"])
    data["options"] = json.loads(data["options"] or "{}")
    return Job(**data)


def _item_from_row(row: Mapping[str, Any], booked: dict[int, float]) -> JobItem:
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
