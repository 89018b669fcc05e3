"""Scheduled generation: batch templates run on a cron schedule (issue 13).

A schedule is a name, a cron expression (five fields, or ``@daily``-style, read in an IANA time
zone, UTC by default) and a batch template (a script, or a list of prompts, with the batch options
of ``studio.jobs.BatchOptions``: provider, model, style, category, tags...). Each firing submits an
ordinary batch job for the schedule's owner, and every image of it carries the tag
``schedule:<name>`` (``schedule_tag``): the history filters by it, and the History page and Gradio's
history show it (``schedule_of``).

    schedules = Schedules(studio)
    schedules.add("daily-blog", "0 9 * * *", "blog/today.txt", options={"category": "blog"})
    schedules.run_due()        # fire what is due now: [Firing(name, due, job_id, error), ...]

Firing once per due time, whatever runs it: every process (web servers' scheduler threads, ``studio
schedule run-due``, the Celery beat task) reads the due rows and fires one only after moving its
``next_run_at`` on from the value it read, in one UPDATE that names that value (``claim``). Of two
processes racing for a due time, the second UPDATE matches no row (SQLite: writers are serialised;
PostgreSQL: the second waits for the first's row lock, then sees the new value), so it skips it.
A claim is taken before the job is made: a process that dies between the two loses that one run
(at most once, never twice), and the claim's own ``last_error`` ("... no job was recorded") stays on
the schedule to say so; ``fire`` replaces it with the outcome (a job id, or why none was made).

Missed times (nothing was running at 09:00) fire once when the schedule is next looked at, not once
per missed time; ``next_run_at`` then moves to the first time after now.

croniter is imported when a schedule is read or made, not when this module is.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio.errors import InvalidRequest, NotFound, StudioError, missing_file
from studio.records import utc_now
from studio.scripts import _decode as decode_script  # a script's bytes as the batch reads them
from studio.storage.index import sql
from studio.validation import server_tags

if TYPE_CHECKING:
    from studio.service import Studio

log = logging.getLogger("studio.schedules")

TAG_PREFIX = "schedule:"  # an image made by schedule NAME carries the tag "schedule:NAME"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
NAME_RULE = "1-63 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
MAX_ERROR_CHARS = 500
# BatchOptions fields a template may set; ``user`` is the schedule's owner, never the template's.
TEMPLATE_OPTIONS = ("provider", "model", "style", "negative_prompt", "width", "height", "n", "steps", "guidance",
                    "quality", "output_format", "compression", "category", "tags", "extra", "postprocess",
                    "seed_policy", "seed", "concurrency", "webhook")


def schedule_tag(name: str) -> str:
    """The tag every image of schedule ``name`` carries."""
    return TAG_PREFIX + name


def schedule_of(tags: list[str]) -> str | None:
    """The name of the schedule that made an image with these tags, or None."""
    for tag in tags:
        if tag.startswith(TAG_PREFIX):
            return tag[len(TAG_PREFIX):]
    return None


def stamp(moment: datetime) -> str:
    """A stored time: UTC, to the second, ``YYYY-MM-DDTHH:MM:SSZ`` (text order is time order)."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str) -> datetime:
    """A stored time (``stamp``'s text) as an aware UTC datetime; ValueError for other text."""
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def check_cron(expression: Any) -> str:
    """``expression`` tidied (single spaces), or InvalidRequest saying why cron cannot read it. Five
    fields (minute hour day-of-month month day-of-week) or a macro such as ``@daily``; croniter's
    optional sixth (seconds) field is refused: schedules run at most once a minute."""
    from croniter import croniter

    if not isinstance(expression, str) or not expression.strip():
        raise InvalidRequest("a schedule needs a cron expression, e.g. '0 9 * * 1' (Mondays at 09:00)")
    text = " ".join(expression.split())
    if not text.startswith("@") and len(text.split(" ")) != 5:
        raise InvalidRequest(f"cron expression {text[:80]!r} has {len(text.split(' '))} fields; it needs five: "
                             "minute hour day-of-month month day-of-week, e.g. '0 9 * * 1'")
    if not croniter.is_valid(text):
        raise InvalidRequest(f"cron expression {text[:80]!r} is not valid: fields are minute (0-59), hour (0-23), "
                             "day of month (1-31), month (1-12), day of week (0-6, Sunday 0), e.g. '0 9 * * 1'")
    _first_match(text)  # a valid expression may still name no real day ("0 9 31 2 *": 31 February)
    return text


def _first_match(text: str) -> None:
    """InvalidRequest when cron ``text`` names no time at all: croniter searches some years ahead
    and then gives up with CroniterBadDateError (a ValueError), which would otherwise escape later."""
    from croniter import CroniterBadDateError, croniter

    try:
        croniter(text, datetime(2000, 1, 1)).get_next(datetime)  # 2000: leap year, so 29 February is found
    except CroniterBadDateError:
        raise InvalidRequest(f"cron expression {text[:80]!r} never runs: no date matches its day and month "
                             "(e.g. 31 February); pick a day that exists") from None


def check_timezone(name: Any) -> str:
    """An IANA time zone name (``Europe/Paris``), or InvalidRequest."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    text = str(name or "").strip() or "UTC"
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidRequest(f"unknown time zone {text[:60]!r}: use an IANA name such as UTC or Europe/Paris") from None
    return text


def next_run(cron: str, after: datetime, tz: str = "UTC") -> datetime:
    """The first time strictly after ``after`` (aware) that ``cron`` names, read as wall-clock time in
    ``tz``; returned in UTC. Raises InvalidRequest for a bad expression or zone."""
    from zoneinfo import ZoneInfo

    from croniter import croniter

    cron, zone = check_cron(cron), ZoneInfo(check_timezone(tz))
    # croniter walks naive wall-clock time: given an aware time it would take 02:30 of the autumn
    # change twice (once per offset). Each wall time found is placed with fold=0 (its first
    # occurrence; a time in the spring gap lands just after it), and one at or before ``after`` (the
    # repeated hour, seen from its second pass) is skipped, so a wall-clock time fires once.
    after_utc = after.astimezone(timezone.utc)
    walker = croniter(cron, after.astimezone(zone).replace(tzinfo=None))
    for _ in range(10_000):  # bound: the repeated hour holds at most 60 minute-steps to skip
        wall = walker.get_next(datetime)
        found = wall.replace(tzinfo=zone, fold=0).astimezone(timezone.utc)
        if found > after_utc:
            return found
    raise InvalidRequest(f"cron expression {cron[:80]!r} found no time after {stamp(after)} in {tz}")


@dataclass
class Schedule:
    """One schedule's row. ``template``: ``{"script": text or [prompts], "script_name", "script_format",
    "options": {BatchOptions fields}}``. Times are stored stamps (``stamp``)."""

    id: str
    name: str
    owner: str
    cron: str
    timezone: str
    template: dict[str, Any]
    enabled: bool
    next_run_at: str
    last_run_at: str | None = None
    last_job_id: str | None = None
    last_error: str | None = None
    runs: int = 0
    created_at: str = ""
    updated_at: str = ""

    @property
    def tag(self) -> str:
        """The tag its firings' images carry: ``schedule:NAME``."""
        return schedule_tag(self.name)

    def public_dict(self) -> dict[str, Any]:
        """What may be shown to the schedule's owner (no owner id): name, cron, zone, times, category,
        provider, model, scene count, last job and error."""
        options = self.template.get("options", {})
        script = self.template.get("script")
        return {"name": self.name, "cron": self.cron, "timezone": self.timezone, "enabled": self.enabled,
                "next_run_at": self.next_run_at, "last_run_at": self.last_run_at, "last_job_id": self.last_job_id,
                "last_error": self.last_error, "runs": self.runs, "category": options.get("category", ""),
                "provider": options.get("provider"), "model": options.get("model"),
                "script_name": self.template.get("script_name", ""),
                "prompts": len(script) if isinstance(script, list) else None, "tag": self.tag}


@dataclass
class Firing:
    """What one due time of a schedule did: the job it submitted, or why none was made."""

    name: str
    due: str
    job_id: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the due time submitted a job (no ``error``)."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """``{name, due, job_id, error, warnings}`` (due: a ``stamp``), for JSON output."""
        return {"name": self.name, "due": self.due, "job_id": self.job_id, "error": self.error,
                "warnings": self.warnings}


_COLUMNS = ("id, name, owner, cron, timezone, template, enabled, next_run_at, last_run_at, last_job_id, "
            "last_error, runs, created_at, updated_at")


def _from_row(row) -> Schedule:
    data = dict(row)
    data["template"] = json.loads(data["template"])
    data["enabled"] = bool(data["enabled"])
    return Schedule(**data)


def check_name(name: Any) -> str:
    """``name`` stripped, if it is a usable schedule name (``NAME_RULE``); InvalidRequest otherwise."""
    text = str(name or "").strip()
    if not NAME_PATTERN.match(text):
        raise InvalidRequest(f"schedule name {text[:70]!r} is not usable: {NAME_RULE}")
    return text


class Schedules:
    """The schedules of one studio, in its database (``HistoryIndex``: SQLite or PostgreSQL)."""

    def __init__(self, studio: "Studio"):
        self.studio = studio
        self.index = studio.storage.index

    # -- reading ----------------------------------------------------------------------------------

    def list(self, owner: str | None = None) -> list[Schedule]:
        """Every schedule (``owner`` None) or one owner's, by name."""
        where, params = ("WHERE owner = :owner", {"owner": owner}) if owner is not None else ("", {})
        with self.index.read() as conn:
            rows = conn.execute(sql(f"SELECT {_COLUMNS} FROM schedules {where} ORDER BY name"), params).mappings().all()
        return [_from_row(row) for row in rows]

    def get(self, name: str, owner: str | None = None) -> Schedule:
        """The schedule ``name`` (of ``owner`` when given); NotFound otherwise."""
        with self.index.read() as conn:
            row = conn.execute(sql(f"SELECT {_COLUMNS} FROM schedules WHERE name = :name"),
                               {"name": str(name).strip()}).mappings().first()
        if row is None or (owner is not None and row["owner"] != owner):
            raise NotFound(f"no schedule named {str(name)[:70]!r}")
        return _from_row(row)

    def due(self, now: datetime) -> list[Schedule]:
        """Enabled schedules whose next run is at or before ``now``, earliest first."""
        with self.index.read() as conn:
            rows = conn.execute(sql(f"SELECT {_COLUMNS} FROM schedules WHERE enabled = 1 AND next_run_at <= :now "
                                    "ORDER BY next_run_at, name"), {"now": stamp(now)}).mappings().all()
        return [_from_row(row) for row in rows]

    def next_due(self) -> datetime | None:
        """The earliest next run of any enabled schedule, or None."""
        with self.index.read() as conn:
            value = conn.execute(sql("SELECT MIN(next_run_at) FROM schedules WHERE enabled = 1")).scalar()
        return parse_stamp(value) if value else None

    # -- changing ---------------------------------------------------------------------------------

    def add(self, name: str, cron: str, script: Any, *, options: dict[str, Any] | None = None,
            owner: str = "local", tz: str = "UTC", script_name: str = "", script_format: str | None = None,
            enabled: bool = True, now: datetime | None = None) -> tuple[Schedule, list[str]]:
        """Store a new schedule; returns it and the preview's warnings (e.g. the provider has no key
        yet on this machine: its workers may have one). ``script``: text, a file path (``Path``) or a
        list of prompts. The template is checked as a batch preview now (scenes, provider, model,
        options), so a bad one fails here, not at 09:00. Raises InvalidRequest (bad name, cron, zone,
        script or option; a name already taken). Nothing is stored on error."""
        name, cron, tz = check_name(name), check_cron(cron), check_timezone(tz)
        options = dict(options or {})
        unknown = set(options) - set(TEMPLATE_OPTIONS)
        if unknown:
            raise InvalidRequest(f"a schedule's template cannot set {', '.join(sorted(unknown))}")
        if isinstance(script, Path):
            if not script.is_file():
                raise missing_file(script, "script")
            script_name = script_name or script.name
            script = script.read_bytes()
        if isinstance(script, bytes):  # kept as text: UTF-8, or UTF-16/32 with a byte-order mark
            script = decode_script(script)
        if isinstance(script, (list, tuple)):
            script = [str(prompt) for prompt in script]
        elif not isinstance(script, str):
            raise InvalidRequest("a schedule's script is text, a file or a list of prompts")
        template = {"script": script, "script_name": script_name, "script_format": script_format,
                    "options": options}
        preview = self._preview(template, owner, name)
        if preview.errors:
            more = f" (and {len(preview.errors) - 1} more)" if len(preview.errors) > 1 else ""
            raise InvalidRequest(f"{preview.errors[0]}{more}; the schedule was not added")
        warnings = list(preview.warnings)
        if not preview.provider_ready:
            warnings.append(f"{preview.job.provider} is not ready here ({preview.provider_reason}); each run "
                            "fails until it is, where the runs happen")
        moment = now or utc_now()
        row = Schedule(id=secrets.token_hex(8), name=name, owner=owner, cron=cron, timezone=tz, template=template,
                       enabled=bool(enabled), next_run_at=stamp(next_run(cron, moment, tz)),
                       created_at=stamp(moment), updated_at=stamp(moment))
        with self.index.write() as conn:
            taken = conn.execute(sql("SELECT 1 FROM schedules WHERE name = :name"), {"name": name}).first()
            if taken:
                raise InvalidRequest(f"a schedule named {name!r} already exists; remove it first or pick another name")
            conn.execute(sql(f"INSERT INTO schedules ({_COLUMNS}) VALUES (:id, :name, :owner, :cron, :timezone, "
                             ":template, :enabled, :next_run_at, NULL, NULL, NULL, 0, :created_at, :updated_at)"),
                         {"id": row.id, "name": name, "owner": owner, "cron": cron, "timezone": tz,
                          "template": json.dumps(template), "enabled": int(row.enabled),
                          "next_run_at": row.next_run_at, "created_at": row.created_at, "updated_at": row.updated_at})
        return row, warnings

    def remove(self, name: str, owner: str | None = None) -> Schedule:
        """Delete the schedule (images it made stay, with their tag). NotFound if there is none."""
        found = self.get(name, owner)
        with self.index.write() as conn:
            conn.execute(sql("DELETE FROM schedules WHERE id = :id"), {"id": found.id})
        return found

    def set_enabled(self, name: str, enabled: bool, owner: str | None = None,
                    now: datetime | None = None) -> Schedule:
        """Pause or resume a schedule; resuming counts its next run from now (nothing missed fires)."""
        found = self.get(name, owner)
        moment = now or utc_now()
        upcoming = stamp(next_run(found.cron, moment, found.timezone)) if enabled else found.next_run_at
        with self.index.write() as conn:
            conn.execute(sql("UPDATE schedules SET enabled = :enabled, next_run_at = :next, updated_at = :now "
                             "WHERE id = :id"),
                         {"enabled": int(bool(enabled)), "next": upcoming, "now": stamp(moment), "id": found.id})
        return self.get(name)

    # -- firing -----------------------------------------------------------------------------------

    def claim(self, schedule: Schedule, now: datetime) -> str | None:
        """Take the due run ``schedule.next_run_at`` for this process: move ``next_run_at`` to the
        first time after ``now``, only if it still holds the value read. Returns the new next run,
        or None when another process took it first (or the schedule was paused or removed)."""
        upcoming = stamp(next_run(schedule.cron, now, schedule.timezone))
        # The claim says, until ``fire`` replaces it with the outcome, that no job is known yet: a
        # process killed in between leaves this on the schedule (``schedule list``) instead of nothing.
        pending = (f"claimed its run due {schedule.next_run_at} at {stamp(now)} but no job was recorded: the "
                   "process stopped before the job was made (or before noting it)")
        with self.index.write() as conn:
            changed = conn.execute(
                sql("UPDATE schedules SET next_run_at = :next, last_run_at = :due, runs = runs + 1, "
                    "last_job_id = NULL, last_error = :pending, "
                    "updated_at = :now WHERE id = :id AND enabled = 1 AND next_run_at = :due"),
                {"next": upcoming, "due": schedule.next_run_at, "now": stamp(now), "id": schedule.id,
                 "pending": pending}).rowcount
        return upcoming if changed == 1 else None

    def run_due(self, now: datetime | None = None) -> list[Firing]:
        """Fire every schedule due at ``now`` (default: the current time) that this process claims:
        each submits one batch job (``fire``). A schedule whose job cannot be made (budget spent,
        provider not set up, a bug) is logged with the reason and kept on the schedule
        (``last_error``); the others still fire. Returns one ``Firing`` per claimed due time."""
        moment = now or utc_now()
        firings = []
        for schedule in self.due(moment):
            if self.claim(schedule, moment) is None:
                continue  # another process fired this due time
            firings.append(self.fire(schedule, due=schedule.next_run_at))
        return firings

    def fire(self, schedule: Schedule, due: str) -> Firing:
        """Submit the schedule's batch job now (its run for ``due``) and note the outcome on it."""
        firing = Firing(schedule.name, due)
        try:
            job, firing.warnings = self._submit(schedule)
            firing.job_id = job.id
            log.info("schedule %s (due %s): started batch job %s", schedule.name, due, job.id)
        except StudioError as error:  # expected refusals: budget, provider not ready, a changed catalog
            firing.error = error.message
            log.error("schedule %s (due %s): no job started: %s", schedule.name, due, error.message)
        except Exception as exc:  # a bug or a broken store: said in the log with its traceback, and kept
            firing.error = self.studio.redact(f"{type(exc).__name__}: {exc}")
            log.exception("schedule %s (due %s): no job started", schedule.name, due)
        with self.index.write() as conn:
            conn.execute(sql("UPDATE schedules SET last_job_id = :job, last_error = :error WHERE id = :id"),
                         {"job": firing.job_id, "error": (firing.error or "")[:MAX_ERROR_CHARS] or None,
                          "id": schedule.id})
        return firing

    # -- the batch --------------------------------------------------------------------------------

    def _preview(self, template: dict[str, Any], owner: str, name: str):
        from studio.jobs import get_manager
        from studio.jobs.runner import SERVER_TAGS_OPTION
        from studio.scripts import parse_script

        options = dict(template.get("options") or {})
        tags = [*(options.pop("tags", None) or []), schedule_tag(name)]
        script = parse_script(template["script"], name=template.get("script_name") or "",
                              format=template.get("script_format"))
        with server_tags(schedule_tag(name)):  # the one place a schedule: tag is given, not typed
            preview = get_manager(self.studio).preview(
                script, user=owner, tags=tags, name=f"schedule {name}: {template.get('script_name') or 'prompts'}",
                **options)
        preview.job.options[SERVER_TAGS_OPTION] = [schedule_tag(name)]  # its scenes keep the tag when they run
        return preview

    def _submit(self, schedule: Schedule):
        from studio.jobs import get_manager

        preview = self._preview(schedule.template, schedule.owner, schedule.name)
        return get_manager(self.studio).submit(preview), list(preview.warnings)


def schedules_for(studio: "Studio") -> Schedules:
    """The ``Schedules`` of a ``Studio``."""
    return Schedules(studio)


__all__ = ["Firing", "Schedule", "Schedules", "TAG_PREFIX", "check_cron", "check_name", "check_timezone",
           "next_run", "parse_stamp", "schedule_of", "schedule_tag", "schedules_for", "stamp"]
