"""`mobius-preview ...`: a thin command line over client, dlq, health and render."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError, InvalidPayload, MobiusError
from .states import State


def _print(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True, default=str))


def _load(path: str) -> Any:
    """A payload file's JSON. A file that cannot be read raises OSError naming it."""
    from .schema import parse_json

    if path == "-":
        return parse_json(sys.stdin.read())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OSError(0, f"not UTF-8 text ({exc.reason} at byte {exc.start})", path) from None
    return parse_json(text)


def cmd_validate(args: argparse.Namespace) -> int:
    from .schema import check

    failed = 0
    for path in args.files:
        try:
            issues = check(_load(path))
        except InvalidPayload as exc:
            issues = exc.issues
        except OSError as exc:
            print(f"{exc.filename or path}: cannot read: {exc.strerror}")
            failed += 1
            continue
        if issues:
            failed += 1
            print(f"{path}: {len(issues)} errors")
            for issue in issues:
                print(f"  {issue}")
        else:
            print(f"{path}: OK")
    return 1 if failed else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from . import client

    for path in args.files:
        try:
            result = client.submit(_load(path))
        except InvalidPayload as exc:
            raise InvalidPayload(exc.issues, source=path) from None
        line = {"jobId": result.id, "created": result.created, "priority": result.priority}
        if args.wait:
            line["status"] = client.wait(result.id, timeout=args.timeout)
        _print(line)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from . import client

    if args.wait:
        _follow(args.job_id, args.timeout)
    _print(client.status(args.job_id))
    return 0


def _follow(job_id: str, timeout: float) -> None:
    """Show the job's progress until it ends: a bar on a terminal, one line a change when piped."""
    from .results import follow

    if not sys.stdout.isatty():
        for kind, event in follow(job_id, timeout):
            if kind == "progress":
                print(f"progress {event['percent']:5.1f}% {event['stage']}", flush=True)
            else:
                print(" ".join(str(v) for k, v in event.items() if k != "at" and v is not None), flush=True)
        return
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description:<24}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn())
    with Progress(*columns, transient=False) as bar:
        task = bar.add_task(job_id, total=100)
        for kind, event in follow(job_id, timeout):
            if kind == "progress":
                bar.update(task, completed=event["percent"], description=event["stage"])
            else:
                done = 100 if event["state"] == State.SUCCEEDED else None
                bar.update(task, description=event["state"], completed=done)


def cmd_cancel(args: argparse.Namespace) -> int:
    from . import client

    _print(client.cancel(args.job_id))
    return 0


def cmd_queues(args: argparse.Namespace) -> int:
    from . import client

    _print(client.queue_stats())
    return 0


def cmd_project(args: argparse.Namespace) -> int:
    from . import client

    change = client.pause_project if args.command == "pause" else client.resume_project
    _print(change(args.project))
    return 0


def cmd_dlq(args: argparse.Namespace) -> int:
    from . import dlq

    if args.action == "list":
        _print(dlq.list_letters())
    elif args.action == "show":
        _print(dlq.show(_need_id(args)))
    elif args.action == "replay":
        _print(dlq.replay_all() if args.all else dlq.replay(_need_id(args)))
    elif args.action == "purge":
        if not dlq.purge(_need_id(args)):
            print(f"no dead letter for {args.job_id!r}", file=sys.stderr)
            return 1
        print(f"purged {args.job_id}")
    return 0


def _need_id(args: argparse.Namespace) -> str:
    if not args.job_id:
        raise SystemExit(f"mobius-preview dlq {args.action}: a job id is required")
    job_id: str = args.job_id
    return job_id


def cmd_health(args: argparse.Namespace) -> int:
    from . import health

    report = health.check()
    _print(report)
    code: int = report["code"]
    return code


def cmd_verify(args: argparse.Namespace) -> int:
    from .render import manifest

    bad = 0
    for folder in args.dirs:
        problems = manifest.verify(Path(folder))
        bad += bool(problems)
        print(f"{folder}: {'OK' if not problems else 'MISMATCH'}")
        for problem in problems:
            print(f"  {problem}")
    return 1 if bad else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(jobs=args.jobs)


def cmd_api(args: argparse.Namespace) -> int:
    from . import api, logs

    logs.configure()
    api.serve(args.host, args.port, args.workers, access_log=args.access_log)
    return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from . import exporter

    if args.setup_only:
        print(exporter.ensure_venv(quiet=False))
        return 0
    return exporter.run(port=args.port, host=args.host)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mobius-preview", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check payload files against the schema")
    p.add_argument("files", nargs="+", help="JSON files ('-' for stdin)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("submit", help="submit payload files as jobs")
    p.add_argument("files", nargs="+")
    p.add_argument("--wait", action="store_true", help="wait for each job to finish")
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a job's state, attempts, error and artifacts")
    p.add_argument("job_id")
    p.add_argument("--wait", action="store_true")
    p.add_argument("--timeout", type=float, default=300)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("cancel", help="cancel a job (a running render is stopped)")
    p.add_argument("job_id")
    p.set_defaults(func=cmd_cancel)

    sub.add_parser("queues", help="waiting jobs per priority and per project, oldest age, dead letters") \
        .set_defaults(func=cmd_queues)

    p = sub.add_parser("pause", help="hold a project's jobs (kept, none started) until resumed")
    p.add_argument("project")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("resume", help="let a paused project's jobs take their turns again")
    p.add_argument("project")
    p.set_defaults(func=cmd_project)

    p = sub.add_parser("dlq", help="the dead-letter queue")
    p.add_argument("action", choices=["list", "show", "replay", "purge"])
    p.add_argument("job_id", nargs="?")
    p.add_argument("--all", action="store_true", help="with replay: every dead letter")
    p.set_defaults(func=cmd_dlq)

    sub.add_parser("health", help="broker, workers, queues, disk; exit 0/1/2") \
        .set_defaults(func=cmd_health)

    p = sub.add_parser("verify", help="re-check a preview folder against its manifest")
    p.add_argument("dirs", nargs="+")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("api", help="serve the HTTP API (uvicorn)")
    p.add_argument("--host", default=os.environ.get("API_HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("API_PORT", "8080")))
    p.add_argument("--workers", type=int, default=int(os.environ.get("API_WORKERS", "1")),
                   help="API processes (each serves every request; links signed by one open in all)")
    p.add_argument("--access-log", action="store_true", help="log every request (off: costly at full rate)")
    p.set_defaults(func=cmd_api)

    p = sub.add_parser("exporter", help="run celery-exporter (own pinned venv, made on first use)")
    p.add_argument("--port", type=int, default=9808)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--setup-only", action="store_true", help="create the venv and exit")
    p.set_defaults(func=cmd_exporter)

    p = sub.add_parser("demo", help="embedded Redis + a worker + the example jobs")
    p.add_argument("--jobs", nargs="*", help="payload files (default: schemas/examples)")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except ConfigError as exc:
        print(f"mobius-preview: configuration error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mobius-preview: {exc.filename}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    except MobiusError as exc:
        print(f"mobius-preview: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
