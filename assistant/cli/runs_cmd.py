"""`ftpilot runs list | show ID | logs ID [-f] | cancel ID | resume ID [--wait]`: training jobs from the shell.

JSON goes to stdout; a waiting call draws its progress (step, loss, ETA) on stderr.
"""

from __future__ import annotations

import sys
import time

from assistant.cli import emit

EXIT_ERROR = 1


def register(sub) -> None:
    p = sub.add_parser("runs", help="list, follow, cancel and resume training runs (jobs)")
    rsub = p.add_subparsers(dest="runs_command", required=True)
    ls = rsub.add_parser("list", help="runs, newest first")
    ls.add_argument("--status", default=None, choices=["queued", "running", "succeeded", "failed", "cancelled"])
    ls.add_argument("--limit", type=int, default=20)
    ls.set_defaults(handler=_list)
    show = rsub.add_parser("show", help="a run's job row, last metrics, ETA and checkpoint")
    show.add_argument("job_id")
    show.add_argument("--wait", action="store_true", help="follow the run until it ends (progress on stderr)")
    show.set_defaults(handler=_show)
    logs = rsub.add_parser("logs", help="print a run's log")
    logs.add_argument("job_id")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing until the run ends")
    logs.set_defaults(handler=_logs)
    cancel = rsub.add_parser("cancel", help="cancel a run (a running one saves a checkpoint first)")
    cancel.add_argument("job_id")
    cancel.set_defaults(handler=_tool("cancel_run"))
    resume = rsub.add_parser("resume", help="resume a failed or cancelled run from its last checkpoint")
    resume.add_argument("job_id")
    resume.add_argument("--wait", action="store_true", help="block until it ends (progress on stderr)")
    resume.set_defaults(handler=_tool("resume_run", with_wait=True))


def _call(name: str, args: dict) -> int:
    from tools import call_tool

    res = call_tool(name, args)
    if res.ok:
        emit(res.output)
        return 0
    emit({"error": res.error})
    print(f"ftpilot: {res.error.get('message')}", file=sys.stderr)
    return EXIT_ERROR


def _tool(name: str, with_wait: bool = False):
    def handler(args) -> int:
        payload = {"job_id": args.job_id}
        if with_wait:
            payload["wait"] = bool(args.wait)
        return _call(name, payload)

    return handler


def _list(args) -> int:
    return _call("list_runs", {"status": args.status, "limit": args.limit})


def _show(args) -> int:
    if args.wait:
        from runtime import jobs
        from runtime.errors import FtpilotError
        from tools.training import ProgressPrinter

        try:
            jobs.wait_job(args.job_id, on_progress=ProgressPrinter())
        except FtpilotError as e:
            emit({"error": e.to_dict()})
            return EXIT_ERROR
    return _call("run_status", {"job_id": args.job_id})


def _logs(args) -> int:
    from runtime import jobs
    from runtime.errors import FtpilotError

    try:
        job = jobs.get_job(args.job_id)
    except FtpilotError as e:
        emit({"error": e.to_dict()})
        return EXIT_ERROR
    pos = 0
    while True:
        try:
            with open(job.log_path, "rb") as f:
                f.seek(pos)
                chunk = f.read()
                pos = f.tell()
        except FileNotFoundError:
            chunk = b""
        if chunk:
            sys.stdout.write(chunk.decode("utf-8", "replace"))
            sys.stdout.flush()
        if not args.follow:
            return 0
        jobs.refresh()
        job = jobs.get_job(args.job_id)
        if job.status in jobs.TERMINAL and not chunk:
            return 0
        time.sleep(0.5)
