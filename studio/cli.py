"""``python -m studio``: the command line, also the contract other tests use.

Errors print one ``error: ...`` line on stderr and exit 2 for bad input, 1 for anything else;
never a traceback. With ``--json``, stdout carries exactly one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

from studio.errors import InvalidRequest, StudioError

EXIT_OK, EXIT_FAILURE, EXIT_INVALID = 0, 1, 2


class UsageError(Exception):
    """argparse found bad arguments."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump; exit code decided by main()
        raise UsageError(message)


def add_generation_options(parser: argparse.ArgumentParser, *, images_help: str = "number of images") -> None:
    """The options every generating command offers (generate, edit, variations, batch); read them
    back with ``generation_options``."""
    parser.add_argument("--provider", "-p", help="provider name (see `providers`)")
    parser.add_argument("--model", "-m", help="model id (default: the provider's default for this kind of work)")
    parser.add_argument("--size", help="WIDTHxHEIGHT, e.g. 512x512, or an aspect ratio W:H (16:9) for a model "
                                       "that takes ratios: made at the size every front end makes it")
    parser.add_argument("-n", "--n", type=int, default=None, help=images_help)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--guidance", type=float)
    parser.add_argument("--negative", default="", help="negative prompt")
    parser.add_argument("--style", help="style preset (see `styles`)")
    parser.add_argument("--format", default="png", help="png, jpeg or webp")
    parser.add_argument("--quality", help="provider render quality, e.g. low/medium/high")
    parser.add_argument("--category", default="")
    parser.add_argument("--tag", action="append", default=[], help="tag (repeatable)")
    parser.add_argument("--user", default="local", help=argparse.SUPPRESS)
    parser.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                        help="provider-specific option, e.g. background=transparent, go_fast=false, guidance=3.5; "
                             "repeat a name for a list (reference_images=a.png --option reference_images=b.png)")
    parser.add_argument("--upscale", type=float, help="post-process: enlarge by this factor (1-4, Lanczos)")
    parser.add_argument("--sharpen", type=float, help="post-process: unsharp mask amount (0-3)")
    parser.add_argument("--enhance", action="store_true", help="post-process: auto-contrast and a mild sharpen")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


ALL_USERS_HELP = ("the operator's view: every owner's images and jobs (web visitors' too), each named by a "
                  "short label (visitor-1a2b3c4d for anonymous visitors)")


def add_all_users(parser: argparse.ArgumentParser) -> None:
    """``--all-users``: the CLI runs on the server as its operator, so it may act for every owner."""
    parser.add_argument("--all-users", action="store_true", help=ALL_USERS_HELP)


def owner_labeler(studio) -> Callable[[str], str]:
    """``owner -> label`` for what ``--all-users`` prints (studio.identity.owner_label)."""
    from studio.identity import VisitorIds, owner_label

    ids = VisitorIds.for_home(studio.home)
    return lambda owner: owner_label(owner, ids)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m studio", description="Image Studio command line")
    parser.add_argument("--home", help="data directory (default: $STUDIO_HOME or ~/.image-studio)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    gen = commands.add_parser("generate", help="text-to-image")
    gen.add_argument("prompt")
    add_generation_options(gen)

    edit = commands.add_parser("edit", help="image-to-image, or inpaint with --mask")
    edit.add_argument("image", help="image file or stored image id")
    edit.add_argument("prompt")
    edit.add_argument("--mask", help="mask file (white = repaint)")
    edit.add_argument("--strength", type=float)
    add_generation_options(edit)

    var = commands.add_parser("variations", help="variations of an image or a prompt")
    var.add_argument("source", nargs="?", help="image file or stored image id")
    var.add_argument("--prompt")
    var.add_argument("--strength", type=float)
    var.add_argument("--scene", action="store_true", help="vary framing and lighting of the scene")
    add_generation_options(var)

    prov = commands.add_parser("providers", help="providers, their status and models")
    prov.add_argument("--json", action="store_true")

    hist = commands.add_parser("history", help="stored images, newest first")
    hist.add_argument("--json", action="store_true")
    hist.add_argument("--limit", type=int, default=20, help="images per page, 1-100")
    hist.add_argument("--offset", type=int, default=0, help="images to skip (0 or more)")
    hist.add_argument("--search")
    hist.add_argument("--provider")
    hist.add_argument("--model")
    hist.add_argument("--tag")
    hist.add_argument("--category")
    hist.add_argument("--since", help="YYYY-MM-DD")
    hist.add_argument("--until", help="YYYY-MM-DD")
    hist.add_argument("--user", default="local", help=argparse.SUPPRESS)
    add_all_users(hist)

    rerun = commands.add_parser("rerun", help="make an image again from its metadata (same mode, inputs, seed)")
    rerun.add_argument("image", help="image file or stored image id")
    rerun.add_argument("--user", default="local", help=argparse.SUPPRESS)
    rerun.add_argument("--json", action="store_true", help="print one JSON object")
    rerun.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")

    info = commands.add_parser("info", help="metadata embedded in an image (PNG info)")
    info.add_argument("image", help="image file or stored image id")
    info.add_argument("--json", action="store_true")

    styles = commands.add_parser("styles", help="style presets")
    styles.add_argument("--json", action="store_true")

    delete = commands.add_parser("delete", help="delete a stored image (file and record)")
    delete.add_argument("image_id")
    delete.add_argument("--json", action="store_true")
    add_all_users(delete)

    stats = commands.add_parser("stats", help="per-model figures and alerts from the audit log")
    stats.add_argument("--days", type=int, default=7)
    stats.add_argument("--json", action="store_true")

    repair = commands.add_parser("repair", help="find (and with --fix, mend) index/file disagreements")
    repair.add_argument("--fix", action="store_true")
    repair.add_argument("--json", action="store_true")

    from studio.jobs.cli import add_commands as add_batch_commands

    add_batch_commands(commands)  # batch, jobs, job
    _add_api_commands(commands)  # serve, token
    from studio.schedule_cli import add_commands as add_schedule_commands

    add_schedule_commands(commands)  # schedule add/list/remove/enable/disable/run-due/run
    return parser


def _add_api_commands(commands) -> None:
    """``serve`` (the HTTP API, with the Gradio UI at /ui) and ``token`` (the API's per-user tokens)."""
    serve = commands.add_parser("serve", help="serve the HTTP API (and the web UI at /ui) with uvicorn")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--no-ui", action="store_true", help="the API alone, without the Gradio UI at /ui")

    token = commands.add_parser("token", help="API tokens: create (shown once), list, revoke")
    actions = token.add_subparsers(dest="token_command", required=True, parser_class=_Parser)
    create = actions.add_parser("create", help="make a token; it is printed once and cannot be shown again")
    create.add_argument("name", help="what the token is for, e.g. 'laptop script'")
    listing = actions.add_parser("list", help="tokens of a user (never the tokens themselves)")
    revoke = actions.add_parser("revoke", help="revoke a token by its id (see `token list`)")
    revoke.add_argument("token_id")
    for action in (create, listing, revoke):
        action.add_argument("--user", default="local", help="the owner the token acts for (default: local)")
        action.add_argument("--json", action="store_true", help="print one JSON object")


def _run_api_command(studio, args: argparse.Namespace) -> int:
    if args.command == "serve":
        from studio.http.server import serve

        if not 0 < args.port < 65536:
            raise InvalidRequest(f"--port must be 1-65535, not {args.port}")
        serve(args.host, args.port, gradio=not args.no_ui, studio=studio)
        return EXIT_OK
    from studio.tokens import tokens_for

    tokens = tokens_for(studio)
    if args.token_command == "create":
        row, secret = tokens.create(args.user, args.name)
        if not args.json:  # stdout carries the token alone, so TOKEN=$(python -m studio token create x) works
            print(f"token {row.id} ({row.name}): copy it now, it is not shown again", file=sys.stderr)
        _emit(args, dict(row.public_dict(), token=secret), lambda: secret)
    elif args.token_command == "list":
        rows = tokens.list(args.user)
        _emit(args, {"tokens": [r.public_dict() for r in rows]},
              lambda: "\n".join(f"{r.id}  {r.created_at}  last used {r.last_used_at or 'never'}"
                                + ("  REVOKED" if r.revoked else "") + f"  {r.name}" for r in rows)
              or "no tokens")
    else:
        row = tokens.revoke(args.user, args.token_id)
        _emit(args, row.public_dict(), lambda: f"revoked {row.id} ({row.name})")
    return EXIT_OK


def _emit(args: argparse.Namespace, payload: dict[str, Any], text: Callable[[], str]) -> None:
    if getattr(args, "json", False):
        print(json.dumps(payload, ensure_ascii=False))
    else:
        print(text())


def generation_options(args: argparse.Namespace, studio=None, *, mode: str = "text-to-image") -> dict[str, Any]:
    """GenerationRequest fields from ``add_generation_options``' arguments (only ``n`` and the size
    are left out when not given), read by the application layer's one coercion
    (``studio.application.forms.coerce_fields``) like every front end's. A ``--size W:H`` is the
    size ``Application.ratio_model`` gives it (``--model``, else the provider's default for
    ``mode``), as in ``Application.form_request``; that needs ``studio``. Raises InvalidRequest for a
    malformed size or --option, or a ratio without ``studio`` (the error names the fix)."""
    from studio.application import Application
    from studio.application.forms import coerce_fields

    post = {name: value for name, value in (("upscale", args.upscale), ("sharpen", args.sharpen),
                                            ("enhance", args.enhance)) if value}
    given = {"seed": args.seed, "steps": args.steps, "guidance": args.guidance, "negative_prompt": args.negative,
             "style": args.style, "output_format": args.format, "quality": args.quality, "category": args.category,
             "tags": args.tag, "n": args.n, "size": args.size,
             "extra": args.option or None,  # text here; the model's schema types it (studio.options)
             "postprocess": post or None}
    if studio is None and args.size and ":" in args.size:
        raise InvalidRequest(f"--size {args.size} is an aspect ratio, which this command cannot size: "
                             "give WIDTHxHEIGHT (e.g. 1024x1024)")
    model = None if studio is None else Application(studio).ratio_model(
        args.user, args.provider, args.model, mode, {"size": args.size})
    # Every field a command may read is present, None (or empty) when not given.
    return {"provider": args.provider, "model": args.model, "user": args.user, "seed": None, "steps": None,
            "guidance": None, "negative_prompt": "", "style": None, "output_format": "png", "quality": None,
            "category": "", "tags": [], **coerce_fields(given, model=model)}


def _progress_printer(args: argparse.Namespace):
    # Progress is for people watching a terminal; in pipes and logs it would only clutter stderr.
    if args.quiet or args.json or not sys.stderr.isatty():
        return None

    def show(event) -> None:
        step = f" step {event.step}/{event.total_steps}" if event.step and event.total_steps else ""
        if event.stage == "downloading":  # a model's first use: what comes down, and how far it got
            step = f" {event.message}"
        # \033[K clears what a longer previous line (a download message) left on the right.
        print(f"\r{event.stage:<12} {event.fraction * 100:5.1f}%{step}\033[K", end="", file=sys.stderr, flush=True)
        if event.stage == "done":
            print(file=sys.stderr)

    return show


def _result_text(result) -> str:
    lines = [f"{r.id}  {r.width}x{r.height} {r.format}  seed={r.seed}  ${r.cost:.4f}  {r.abs_path or r.path}"
             for r in result.images]
    if result.cached:
        lines.append("(reused stored images: identical request with a fixed seed)")
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from studio import get_studio

    studio = get_studio(args.home)
    command = args.command
    if command in ("batch", "jobs", "job"):
        from studio.jobs.cli import run_command

        return run_command(studio, args)
    if command in ("serve", "token"):
        return _run_api_command(studio, args)
    if command == "schedule":
        from studio.schedule_cli import run_command as run_schedule_command

        return run_schedule_command(studio, args)
    if command in ("generate", "edit", "variations"):
        from studio.types import GenerationRequest

        options = generation_options(args, studio, mode={"generate": "text-to-image", "edit": "image-to-image",
                                                         "variations": "variation"}[command])
        progress = _progress_printer(args)
        if command == "generate":
            result = studio.generate(GenerationRequest(prompt=args.prompt, **options), progress=progress)
        elif command == "edit":
            result = studio.edit(args.image, args.prompt, mask=args.mask, strength=args.strength,
                                 progress=progress, **options)
        else:
            n = options.pop("n", 4)
            result = studio.variations(args.source, prompt=args.prompt, n=n, strength=args.strength,
                                       scene=args.scene, progress=progress, **options)
        _emit(args, result.to_dict(), lambda: _result_text(result))
    elif command == "providers":
        statuses = studio.provider_statuses()
        _emit(args, {"providers": [s.to_dict() for s in statuses]}, lambda: _providers_text(statuses))
    elif command == "history":
        from studio.paging import page_bounds

        limit, offset = page_bounds(args.limit, args.offset)
        page = studio.history(owner=None if args.all_users else args.user, text=args.search, provider=args.provider,
                              model=args.model, tag=args.tag, category=args.category, date_from=args.since,
                              date_to=args.until, limit=limit, offset=offset)
        label = owner_labeler(studio) if args.all_users else None
        items = [dict(r.to_dict(), owner=label(r.owner)) if label else r.to_dict() for r in page.items]
        _emit(args, {"items": items, "total": page.total},
              lambda: "\n".join(f"{r.created_at[:19]}  {r.id}  " + (f"{label(r.owner)}  " if label else "")
                                + f"{r.provider}/{r.model}  {r.prompt[:60]!r}"
                                for r in page.items) + f"\n({len(page.items)} of {page.total})")
    elif command == "rerun":
        request = studio.request_from_image(args.image, args.user)
        result = studio.generate(request, progress=_progress_printer(args))
        _emit(args, result.to_dict(), lambda: _result_text(result))
    elif command == "info":
        meta = studio.info(args.image)
        _emit(args, meta, lambda: _info_text(meta))
    elif command == "styles":
        styles = studio.styles.all()
        _emit(args, {"styles": [{"name": s.name, "label": s.label, "prompt": s.prompt,
                                 "negative_prompt": s.negative_prompt, "source": s.source} for s in styles]},
              lambda: "\n".join(f"{s.name:<16} {s.prompt}" for s in styles))
    elif command == "delete":
        found = studio.storage.get(args.image_id.strip()) if args.all_users else None
        studio.delete_image(args.image_id, found.owner if found else "local")
        _emit(args, {"deleted": args.image_id}, lambda: f"deleted {args.image_id}")
    elif command == "stats":
        if args.days < 1:
            raise InvalidRequest(f"--days must be 1 or more, not {args.days}")
        figures = studio.stats(days=args.days)
        found = studio.alerts()
        _emit(args, {"models": [f.to_dict() for f in figures], "alerts": [a.to_dict() for a in found],
                     "spent_today": round(studio.spent_today(), 6)}, lambda: _stats_text(figures, found))
    elif command == "repair":
        report = studio.repair(fix=args.fix)
        _emit(args, report.to_dict(), lambda: _repair_text(report))
        return EXIT_OK if report.clean or args.fix else EXIT_FAILURE
    return EXIT_OK


def _info_text(meta: dict[str, Any]) -> str:
    """``info`` for people: the generation parameters in one shape whichever tool wrote them, or
    why there are none ("(no generation metadata)", "(unrecognised format)")."""
    found = meta.get("generation")
    if not found:
        return f"({meta.get('note') or 'no generation metadata'})"
    size = f"{found['width']}x{found['height']}" if found.get("width") and found.get("height") else None
    settings = [f"{label}: {value}" for label, value in (
        ("Seed", found.get("seed")), ("Steps", found.get("steps")), ("Guidance", found.get("guidance")),
        ("Size", size), ("Model", found.get("model")), ("Sampler", found.get("sampler"))) if value not in (None, "")]
    lines = [f"Source: {found['source']}", f"Prompt: {found.get('prompt') or '(none)'}"]
    if found.get("negative_prompt"):
        lines.append(f"Negative prompt: {found['negative_prompt']}")
    if settings:
        lines.append(", ".join(settings))
    if meta.get("seed_note"):
        lines.append(f"note: {meta['seed_note']}")
    return "\n".join(lines)


def _providers_text(statuses) -> str:
    from studio.options import spec_from_entry

    lines = []
    for status in statuses:
        reason = f" — {status.reason}" if status.reason else ""
        lines.append(f"{status.name:<10} {status.state}{reason}")
        for model in status.models:
            lines.append(f"    {model['id']:<44} {', '.join(model['modes'])}")
            if model.get("options"):  # what --option takes for this model
                specs = [spec_from_entry(name, entry) for name, entry in model["options"].items()]
                lines.append("        --option " + "; ".join(f"{spec.name}: {spec.allowed()}" for spec in specs))
    return "\n".join(lines)


def _stats_text(figures, found) -> str:
    lines = [f"{'provider/model':<48} {'requests':>8} {'success':>8} {'median s':>9} {'$/image':>9} "
             f"{'vs estimate':>11}"]
    for f in figures:
        lines.append(f"{f.provider + '/' + f.model:<48} {f.requests:>8} {f.success_rate:>8.0%} "
                     f"{f.median_seconds:>9.2f} {f.cost_per_image:>9.4f} {f.estimate_error:>+11.0%}")
    lines += [f"{a.level}: {a.message}" for a in found] or ["no alerts"]
    return "\n".join(lines)


def _repair_text(report) -> str:
    if report.clean:
        return "index and files agree"
    parts = [f"{name.replace('_', ' ')}: {len(value)}" for name, value in report.to_dict().items()
             if isinstance(value, list) and value]
    return "; ".join(parts) + ("" if report.fixed else "  (run with --fix to mend)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        code = run(args)
        sys.stdout.flush()  # inside the try: a reader that went away is handled below, not at exit
        return code
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except InvalidRequest as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except StudioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except BrokenPipeError:
        # The reader went away (`info F | head`): nothing more to say. Point stdout at /dev/null so the
        # interpreter's final flush does not report the same broken pipe again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except Exception as exc:  # the promise is: never a traceback
        from studio.db import connection_failure

        # The database went away mid-command: one line naming it (SQLAlchemy's own text spans lines
        # and quotes SQL), not an "unexpected" error.
        failure = connection_failure(exc)
        print(f"error: {failure}" if failure else f"error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILURE
