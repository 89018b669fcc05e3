"""The batch subcommands of ``python -m studio``: ``batch``, ``jobs`` and ``job``.

``batch SCRIPT`` runs in the foreground until the job is done, printing progress on stderr; with
``--json`` stdout is one object ``{"job_id", "status", "items": [{"index", "timestamp", "text",
"status", "images": [...]}], ...}``. If the process is killed, ``batch --resume JOB`` finishes it.
The exit code is 0 when every scene completed, 1 otherwise (the JSON is printed either way).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from studio.cli import add_all_users, add_generation_options, generation_options, owner_labeler
from studio.errors import InvalidRequest, StudioError, missing_file
from studio.webhooks import JOB_SECRET_NOTICE, job_secret

COMMANDS = ("batch", "jobs", "job")
WEBHOOK_FLUSH_SECONDS = 30.0


def add_commands(commands) -> None:
    batch = commands.add_parser("batch", help="one image per scene of a script (text, CSV, JSON, SRT, WebVTT)")
    batch.add_argument("script", nargs="?", help="script file, or - for stdin")
    batch.add_argument("--resume", metavar="JOB", help="finish a job that was interrupted or paused")
    # The same generation options as generate/edit/variations (--seed is the base seed of the job).
    add_generation_options(batch, images_help="images per scene (default 1)")
    batch.add_argument("--script-format", help="text, lines, paragraphs, csv, json, srt or vtt (default: guessed)")
    batch.add_argument("--concurrency", type=int, help="scenes at once (at most the provider's limit)")
    batch.add_argument("--seed-policy", choices=("per-scene", "fixed"), default="per-scene")
    batch.add_argument("--webhook", help="POST progress and results here, signed with STUDIO_WEBHOOK_SECRET or, "
                       "without it, with a secret made for the job and printed once")
    batch.add_argument("--dry-run", action="store_true", help="only show the preview: prompts, seeds, cost")
    add_all_users(batch)  # with --resume: finish a visitor's job

    jobs = commands.add_parser("jobs", help="batch jobs, newest first")
    jobs.add_argument("--limit", type=int, default=20, help="jobs to list, 1-100")
    jobs.add_argument("--user", default="local", help=argparse.SUPPRESS)
    jobs.add_argument("--json", action="store_true")
    add_all_users(jobs)

    job = commands.add_parser("job", help="one batch job: its scenes, status and images")
    job.add_argument("job_id")
    action = job.add_mutually_exclusive_group()
    action.add_argument("--cancel", action="store_true", help="cancel the job")
    action.add_argument("--pause", action="store_true", help="pause: no new scenes start")
    action.add_argument("--retry", action="store_true", help="run the failed scenes again (and wait)")
    action.add_argument("--export", metavar="ZIP", help="write the images, manifest and script.json to ZIP")
    job.add_argument("--user", default="local", help=argparse.SUPPRESS)
    job.add_argument("--json", action="store_true")
    job.add_argument("--quiet", "-q", action="store_true")
    add_all_users(job)


def run_command(studio, args: argparse.Namespace) -> int:
    from studio.jobs import get_manager

    manager = get_manager(studio)
    if args.command == "jobs":
        from studio.paging import page_bounds

        limit, _ = page_bounds(args.limit)
        jobs = manager.list(None if args.all_users else args.user, limit=limit)
        label = owner_labeler(studio) if args.all_users else None
        _emit(args, {"jobs": [_job_row(j, label) for j in jobs]}, lambda: _jobs_text(jobs, label))
        return 0
    named = args.job_id if args.command == "job" else args.resume
    if args.all_users and named:
        # The operator acts on whoever's job it is; an unknown id stays the manager's NotFound.
        found = manager.store.get(str(named).strip(), items=False)
        if found is not None:
            args.user = found.owner
    if args.command == "batch":
        return _batch(manager, args)
    if args.cancel:
        manager.cancel(args.job_id, args.user)
    elif args.pause:
        manager.pause(args.job_id, args.user)
    elif args.retry:
        manager.retry(args.job_id, args.user)
        return _follow(manager, args, args.job_id)
    elif args.export:
        target = Path(args.export).expanduser()
        data = manager.export_zip(args.job_id, args.user)
        target.write_bytes(data)
        _emit(args, {"job_id": args.job_id, "zip": str(target.resolve()), "bytes": len(data)},
              lambda: f"wrote {target} ({len(data):,} bytes)")
        return 0
    result = manager.result(args.job_id, args.user)
    _emit(args, result, lambda: _job_text(result))
    return 0


def _batch(manager, args: argparse.Namespace) -> int:
    if args.resume:
        if args.script:
            raise InvalidRequest("give a script or --resume JOB, not both")
        job = manager.resume(args.resume, args.user)
        return _follow(manager, args, job.id)
    if not args.script:
        raise InvalidRequest("name a script file (or - for stdin), or --resume JOB")
    if args.script == "-":
        # bytes: the script's byte-order mark decides its encoding (UTF-16 from Windows), not the locale
        source, name = sys.stdin.buffer.read(), ""
    else:
        path = Path(args.script).expanduser()
        if not path.is_file():
            raise missing_file(path, "script")
        source, name = path, path.name
    options: dict[str, Any] = dict(generation_options(args, manager.studio), seed_policy=args.seed_policy,
                                   concurrency=args.concurrency, webhook=args.webhook, name=name,
                                   format=args.script_format)
    preview = manager.preview(source, **options)
    if args.dry_run:
        _emit(args, preview.to_dict(), lambda: _preview_text(preview))
        return 0 if not preview.errors else 2
    job = manager.submit(preview)
    if not (args.quiet or args.json):
        print(f"job {job.id}: {job.total} scene(s) on {job.provider}/{job.model}, {job.concurrency} at a time, "
              f"estimated ${job.estimated_cost:.4f}", file=sys.stderr)
    if job_secret(job):  # even with --quiet/--json: without it the webhooks cannot be checked
        print(f"{JOB_SECRET_NOTICE}\nwebhook secret: {job_secret(job)}", file=sys.stderr)
    return _follow(manager, args, job.id)


def _follow(manager, args: argparse.Namespace, job_id: str) -> int:
    """Wait for the job while showing progress; print the result; exit code from its status."""
    show = not (getattr(args, "quiet", False) or args.json)
    try:
        while True:
            job = manager.wait(job_id, args.user, timeout=0.5)
            if show:
                print(f"\r{job.status.value.lower():<10} {job.done}/{job.total} scenes  {job.progress:5.1f}%  "
                      f"${job.cost:.4f}", end="", file=sys.stderr, flush=True)
            # Paused or cancelled (here or by another process): the scenes this process has in
            # flight still finish (or are interrupted) before it exits, so none is abandoned.
            if (job.status.value != "RUNNING" or job.interrupted) and not manager.runner.running(job_id):
                break
    except KeyboardInterrupt:
        manager.runner.shutdown(wait=0)
        raise StudioError(f"interrupted; finish it with: python -m studio batch --resume {job_id}") from None
    if show:
        print(file=sys.stderr)
    if job.webhook_url and not manager.webhooks.flush(WEBHOOK_FLUSH_SECONDS):
        print("warning: some webhook deliveries did not get through", file=sys.stderr)
    result = manager.result(job_id, args.user)
    _emit(args, result, lambda: _job_text(result))
    if result["status"] == "COMPLETED":
        return 0
    failed = result["counts"].get("FAILED", 0)
    if result["status"] == "FAILED":
        print(f"error: {failed} of {result['total']} scene(s) failed; run them again with: "
              f"python -m studio job {job_id} --retry", file=sys.stderr)
    elif result["status"] == "PAUSED":
        print(f"error: the job is paused{': ' + result['error'] if result['error'] else ''}; continue with: "
              f"python -m studio batch --resume {job_id}", file=sys.stderr)
    else:
        print(f"error: the job is {result['status'].lower()}", file=sys.stderr)
    return 1


def _emit(args: argparse.Namespace, payload: dict[str, Any], text) -> None:
    print(json.dumps(payload, ensure_ascii=False, default=str) if args.json else text())


def _preview_text(preview) -> str:
    lines = [f"{row['scene']:>4}  {row['timestamp']:<12} seed={row['seed']:<10} ${row['estimated_cost']:.4f}  "
             f"{row['prompt'][:70]}" for row in preview.rows()]
    budget = ("no daily budget" if preview.daily_budget is None else
              f"${preview.budget_remaining:.4f} of ${preview.daily_budget:.2f} left today"
              + ("" if preview.within_budget else "  -- OVER BUDGET"))
    lines.append(f"{len(preview.items)} scene(s) on {preview.job.provider}/{preview.job.model}: "
                 f"estimated ${preview.estimated_total:.4f} ({budget})")
    lines += [f"error: {e}" for e in preview.errors] + [f"warning: {w}" for w in preview.warnings]
    return "\n".join(lines)


def _job_row(job, label) -> dict[str, Any]:
    """A job for ``jobs --json``: with ``--all-users`` its owner is the operator's label, never the id."""
    row = job.to_dict(items=False)
    if label is not None:
        row["owner"] = label(job.owner)
    return row


def _jobs_text(jobs, label=None) -> str:
    if not jobs:
        return "(no jobs)"
    return "\n".join(
        f"{j.id}  {j.created_at[:19]}  " + (f"{label(j.owner)}  " if label else "")
        + f"{j.status.value + (' (interrupted)' if j.interrupted else ''):<24} "
        f"{j.done}/{j.total}  ${j.cost:.4f}  {j.provider}/{j.model}  {j.script_name}" for j in jobs)


def _job_text(result: dict[str, Any]) -> str:
    lines = [f"job {result['job_id']}: {result['status']}  {result['progress']:.0f}%  ${result['cost']:.4f}"]
    lines += [f"warning: {w}" for w in result.get("warnings") or []]  # each once, not per scene
    for item in result["items"]:
        paths = ", ".join(image["path"] for image in item["images"]) or (item["error"] or "")
        lines.append(f"{item['index'] + 1:>4}  {item['timestamp'] or '':<12} {item['status']:<12} "
                     f"{item['text'][:40]!r}  {paths}")
    return "\n".join(lines)


__all__ = ["COMMANDS", "add_commands", "run_command"]
