"""What a batch job is: a job of items, one item per scene, each with its own status and images."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from studio.webhooks import JOB_API_OPTION, JOB_SECRET_OPTION


class ItemStatus(str, Enum):
    PENDING = "PENDING"
    INITIALIZING = "INITIALIZING"
    GENERATING = "GENERATING"
    SAVING = "SAVING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def active(self) -> bool:
        return self in ACTIVE

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


ACTIVE = frozenset({ItemStatus.INITIALIZING, ItemStatus.GENERATING, ItemStatus.SAVING})
TERMINAL = frozenset({ItemStatus.COMPLETED, ItemStatus.FAILED, ItemStatus.CANCELLED})
# The progress stages Studio.generate reports, and the item status each one means.
STAGE_STATUS = {"initializing": ItemStatus.INITIALIZING, "generating": ItemStatus.GENERATING,
                "saving": ItemStatus.SAVING, "done": ItemStatus.SAVING}


class JobStatus(str, Enum):
    PENDING = "PENDING"  # created, not started
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"  # no new items start; resume to continue
    COMPLETED = "COMPLETED"  # every item completed (or was cancelled one by one)
    FAILED = "FAILED"  # finished, and at least one item failed: retry them
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


SEED_POLICIES = ("per-scene", "fixed")


@dataclass
class JobItem:
    job_id: str
    index: int
    text: str
    prompt: str = ""  # the prompt as sent, style applied
    negative_prompt: str = ""
    timestamp: str | None = None
    start: float | None = None
    end: float | None = None
    line: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    status: ItemStatus = ItemStatus.PENDING
    progress: float = 0.0  # 0-100
    attempts: int = 0
    request_id: str | None = None  # the current attempt's request id (images carry it)
    error: str | None = None  # why the item failed, was cancelled or is waiting; None once completed
    error_kind: str | None = None
    warnings: list[str] = field(default_factory=list)  # what a completed item's result should be told
    cost: float = 0.0  # USD booked for its attempts (the audit log's rows of their request ids)
    estimated_cost: float = 0.0
    image_ids: list[str] = field(default_factory=list)
    cancel_requested: bool = False
    created_at: str = ""
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["status"] = self.status.value
        data["progress"] = round(self.progress, 1)
        data["cost"] = round(self.cost, 6)
        return data


@dataclass
class Job:
    id: str
    owner: str
    status: JobStatus
    provider: str
    model: str
    style: str | None = None
    seed_policy: str = "per-scene"
    base_seed: int | None = None
    concurrency: int = 1
    options: dict[str, Any] = field(default_factory=dict)  # GenerationRequest fields shared by every item
    webhook_url: str | None = None
    script_name: str = ""
    script_format: str = ""
    total: int = 0
    estimated_cost: float = 0.0
    error: str | None = None  # why a job paused or stopped (budget, a broken store...)
    runner: str | None = None  # which runner holds it ("host:pid:token")
    heartbeat_at: float | None = None
    webhook_delivered: int = 0
    webhook_error: str | None = None
    created_at: str = ""
    updated_at: str = ""
    started_at: str | None = None
    finished_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)  # item status -> how many
    cost: float = 0.0  # USD booked for every attempt of every item (the audit log by request id)
    warnings: list[str] = field(default_factory=list)  # its items' warnings, each once
    progress: float = 0.0  # 0-100 over all items
    interrupted: bool = False  # marked RUNNING but its runner is gone: resume it
    items: list[JobItem] | None = None

    @property
    def done(self) -> int:
        return sum(self.counts.get(s.value, 0) for s in TERMINAL)

    @property
    def callers_webhook(self) -> bool:
        """Whether the job's webhook is one its caller gave (and may see again), not the operator's:
        a document 3 job's hook is ``STUDIO_JOB_API_WEBHOOK_URL``, whose URL (often carrying a secret in
        its path) and delivery errors (which name its host) are the operator's alone."""
        return bool(self.webhook_url) and not self.options.get(JOB_API_OPTION)

    def to_dict(self, items: bool = True) -> dict[str, Any]:
        data = {name: getattr(self, name) for name in self.__dataclass_fields__ if name != "items"}
        # A job's own webhook secret is shown once, when the job is made; never in its records.
        data["options"] = {k: v for k, v in self.options.items() if k != JOB_SECRET_OPTION}
        data["status"] = self.status.value
        data["cost"] = round(self.cost, 6)
        data["progress"] = round(self.progress, 1)
        data.pop("runner", None)
        if items and self.items is not None:
            data["items"] = [item.to_dict() for item in self.items]
        return data
