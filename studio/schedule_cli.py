"""``python -m studio schedule ...``: scheduled batches (``studio.schedules``).

    schedule add NAME --cron "0 9 * * 1" --script FILE [batch options]   # or --prompt TEXT (repeatable)
    schedule list [--json]
    schedule remove NAME
    schedule enable NAME / schedule disable NAME
    schedule run-due [--json]     # fire what is due now, once (cron can call it), and wait for its jobs
    schedule run                  # the scheduler loop in the foreground, until Ctrl-C

Bad input (cron, zone, script, option, name) exits 2 with one ``error:`` line, as every command.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from studio.errors import InvalidRequest


def add_commands(commands) -> None:
    """Add ``schedule add|list|remove|enable|disable|run-due|run`` to the CLI's subparsers ``commands``."""
    from studio.cli import _Parser, add_generation_options

    schedule = commands.add_parser("schedule", help="scheduled batches: add, list, remove, run-due, run")
    actions = schedule.add_subparsers(dest="schedule_command", required=True, parser_class=_Parser)
    add = actions.add_parser("add", help="a batch template fired on a cron schedule")
    add.add_argument("name", help="the schedule's name (its images carry the tag schedule:NAME)")
    add.add_argument("--cron", required=True, help="minute hour day-of-month month day-of-week, e.g. '0 9 * * 1'")
    add.add_argument("--timezone", default="UTC", help="IANA zone the cron times are read in (default UTC)")
    add.add_argument("--script", help="script file (text, CSV, JSON, SRT, WebVTT): one image per scene")
    add.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable), instead of --script")
    add.add_argument("--script-format", help="text, lines, paragraphs, csv, json, srt or vtt (default: guessed)")
    add.add_argument("--concurrency", type=int, help="scenes at once (at most the provider's limit)")
    add.add_argument("--seed-policy", choices=("per-scene", "fixed"), default="per-scene")
    add.add_argument("--disabled", action="store_true", help="store it paused (schedule enable NAME starts it)")
    add_generation_options(add, images_help="images per scene (default 1)")
    listing = actions.add_parser("list", help="schedules with their next and last runs")
    remove = actions.add_parser("remove", help="delete a schedule (its images stay)")
    remove.add_argument("name")
    enable = actions.add_parser("enable", help="resume a paused schedule (next run counted from now)")
    enable.add_argument("name")
    disable = actions.add_parser("disable", help="pause a schedule")
    disable.add_argument("name")
    due = actions.add_parser("run-due", help="fire the schedules due now, once, and wait for their jobs")
    due.add_argument("--no-wait", action="store_true", help="return once the jobs are submitted")
    loop = actions.add_parser("run", help="the scheduler in the foreground (fires each due time) until Ctrl-C")
    for action in (listing, remove, enable, disable, due, loop):
        action.add_argument("--user", default="local", help=argparse.SUPPRESS)
        action.add_argument("--json", action="store_true", help="print one JSON object")


def run_command(studio, args: argparse.Namespace) -> int:
    """Run the parsed ``schedule`` command on ``studio``; returns the exit status (0 done; 1 when a due
    schedule could not submit its job). Raises InvalidRequest / NotFound for bad input or an unknown
    name (``studio.cli`` prints them and exits non-zero)."""
    from studio.cli import _emit
    from studio.schedules import Schedules

    schedules = Schedules(studio)
    action = args.schedule_command
    if action == "add":
        return _add(schedules, args)
    if action == "list":
        rows = [s.public_dict() for s in schedules.list(args.user)]
        _emit(args, {"schedules": rows}, lambda: _list_text(rows))
    elif action == "remove":
        gone = schedules.remove(args.name, args.user)
        _emit(args, {"removed": gone.name}, lambda: f"removed schedule {gone.name} (its images keep tag {gone.tag})")
    elif action in ("enable", "disable"):
        row = schedules.set_enabled(args.name, action == "enable", args.user).public_dict()
        state = f"enabled, next run {row['next_run_at']}" if row["enabled"] else "paused"
        _emit(args, row, lambda: f"{row['name']}: {state}")
    elif action == "run-due":
        return _run_due(studio, schedules, args)
    else:
        return _loop(studio, args)
    return 0


def _add(schedules, args: argparse.Namespace) -> int:
    from studio.cli import _emit, generation_options

    if bool(args.script) == bool(args.prompt):
        raise InvalidRequest("give a script (--script FILE) or prompts (--prompt TEXT, repeatable), not both")
    options: dict[str, Any] = dict(generation_options(args), seed_policy=args.seed_policy,
                                   concurrency=args.concurrency)
    owner = options.pop("user")
    options = {name: value for name, value in options.items() if value not in (None, "", [], {})}
    script = Path(args.script).expanduser() if args.script else list(args.prompt)
    row, warnings = schedules.add(args.name, args.cron, script, options=options, owner=owner, tz=args.timezone,
                                  script_format=args.script_format, enabled=not args.disabled)
    shown = dict(row.public_dict(), warnings=warnings)
    _emit(args, shown, lambda: "\n".join([f"schedule {row.name}: {row.cron} ({row.timezone}), next run "
                                          f"{row.next_run_at}" + ("" if row.enabled else " (paused)")]
                                         + [f"warning: {w}" for w in warnings]))
    return 0


def _run_due(studio, schedules, args: argparse.Namespace) -> int:
    from studio.cli import _emit
    from studio.jobs import get_manager

    firings = schedules.run_due()
    manager = get_manager(studio)
    if not args.no_wait and not studio.settings.broker_url:
        # Scenes run on this process's threads: leaving now would interrupt them.
        for firing in firings:
            if firing.job_id:
                owner = schedules.get(firing.name).owner
                manager.wait(firing.job_id, owner)
    _emit(args, {"fired": [f.to_dict() for f in firings]},
          lambda: "\n".join(f"{f.name} (due {f.due}): " + (f"job {f.job_id}" if f.ok else f"error: {f.error}")
                            for f in firings) or "nothing due")
    return 0 if all(f.ok for f in firings) else 1


def _loop(studio, args: argparse.Namespace) -> int:
    from studio.jobs import get_manager
    from studio.scheduler import Scheduler

    get_manager(studio).recover()  # batch jobs a previous run left half done continue
    scheduler = Scheduler(studio)
    print("firing schedules when due; Ctrl-C stops (running jobs stay resumable)", file=sys.stderr)
    try:
        scheduler.run()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        get_manager(studio).close()
    return 0


def _list_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no schedules"
    lines = []
    for row in rows:
        state = f"next {row['next_run_at']}" if row["enabled"] else "paused"
        last = f", last {row['last_run_at']} -> job {row['last_job_id'] or '-'}" if row["last_run_at"] else ""
        error = f"  error: {row['last_error']}" if row["last_error"] else ""
        lines.append(f"{row['name']:<20} {row['cron']:<16} {row['timezone']:<14} {state}{last}"
                     f"  category={row['category'] or '-'}{error}")
    return "\n".join(lines)


__all__ = ["add_commands", "run_command"]
