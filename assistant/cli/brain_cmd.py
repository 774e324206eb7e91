"""`ftpilot brain build` (train and install the router adapter), `ftpilot brain rescore` (the report's brain columns
after a rule change), `ftpilot brain measure FILE` (the router on requests written elsewhere) and `ftpilot brain
route MESSAGE` (what the router decides for one message). JSON on stdout;
progress on stderr."""

from __future__ import annotations

import dataclasses
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("brain", help="the brain's own router model: build it, or try it on a message")
    bsub = p.add_subparsers(dest="brain_command", metavar="SUBCOMMAND")
    b = bsub.add_parser("build", help="generate data, audit, clean, split, train_sft, evaluate, install the adapter")
    from assistant.brain_build.pipeline import BuildConfig

    for f in dataclasses.fields(BuildConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            b.add_argument(flag, dest=f.name, action="store_true", default=f.default)
            b.add_argument("--no-" + f.name.replace("_", "-"), dest=f.name, action="store_false")
        else:
            kind = {"int": int, "float": float, "int | None": int, "str | None": str}.get(str(f.type), str)
            b.add_argument(flag, dest=f.name, type=kind, default=f.default)
    b.set_defaults(handler=run_build)
    s = bsub.add_parser("rescore", help="re-measure the report's brain columns after a change to the rules after "
                        "the adapter (no retraining: the adapter's recorded calls are replayed)")
    s.add_argument("--install-dir", default=None, help="adapter dir (default: the shipped one)")
    s.add_argument("--refit-lexical", action="store_true",
                   help="fit the lexical classifier again from the build's data first (seconds)")
    s.set_defaults(handler=run_rescore)
    m = bsub.add_parser("measure", help="the installed router on your own requests (JSON lines: message, name, "
                        "arguments, optional project): accuracy with 95%% intervals, nothing written")
    m.add_argument("requests")
    m.add_argument("--install-dir", default=None, help="adapter dir (default: the shipped one)")
    m.add_argument("--base", action="store_true", help="also the base model without the adapter (slower)")
    m.set_defaults(handler=run_measure)
    r = bsub.add_parser("route", help="route one message: the router adapter, the lexical classifier, the brain's "
                        "decision from the two, and the keyword table")
    r.add_argument("message")
    r.add_argument("--adapter", default=None, help="adapter dir (default: the shipped one)")
    r.set_defaults(handler=run_route)
    p.set_defaults(handler=lambda _a: p.print_help() or 0)


def run_build(args) -> int:
    from assistant.brain_build.pipeline import BuildConfig, BuildError, build
    from assistant.cli import emit

    cfg = BuildConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(BuildConfig)})
    try:
        report = build(cfg)
    except BuildError as e:
        emit({"error": {"code": "brain_build_failed", "message": str(e),
                        "hint": "The step's tool error is above; fix it and rerun `ftpilot brain build`."}})
        return 1
    emit({"installed": cfg.install_dir, "seconds": report["seconds"], "load_avg_1m_mean":
          report["machine"]["load_avg_1m_mean"], "adapter": report["adapter"],
          "accuracy": {s: {r: {m: v[m]["value"] for m in ("tool_accuracy", "exact_call_accuracy")}
                           for r, v in d["routers"].items()} for s, d in report["sets"].items()},
          "latency": report["latency"]})
    return 0


def run_rescore(args) -> int:
    from assistant.brain_build.pipeline import rescore
    from assistant.brains.router import ROUTER_DIR
    from assistant.cli import emit

    where = Path(args.install_dir or ROUTER_DIR)
    if not (where / "report.json").is_file():
        emit({"error": {"code": "not_found", "message": f"no build report at {where / 'report.json'}",
                        "hint": "Pass the folder `ftpilot brain build --install-dir` wrote, or build first."}})
        return 1
    report = rescore(where, args.refit_lexical)
    emit({"rescored": str(where),
          "brain": {s: {m: d["routers"]["brain"][m]["value"] for m in ("tool_accuracy", "exact_call_accuracy")}
                    for s, d in report["sets"].items()}})
    return 0


def run_measure(args) -> int:
    from assistant.brain_build.pipeline import measure
    from assistant.brains.router import ROUTER_DIR
    from assistant.cli import emit

    where = Path(args.install_dir or ROUTER_DIR)
    for need, what in ((where / "report.json", "build report"), (Path(args.requests), "requests file")):
        if not need.is_file():
            emit({"error": {"code": "not_found", "message": f"no {what} at {need}",
                            "hint": "Pass a JSON-lines file of requests and an adapter folder that `ftpilot brain "
                                    "build` wrote."}})
            return 1
    try:
        out = measure(args.requests, where, args.base)
    except (ValueError, KeyError, TypeError) as e:   # a line that is not a labelled request
        emit({"error": {"code": "bad_input", "message": f"{args.requests}: {type(e).__name__}: {e}",
                        "hint": 'Each line: {"message": ..., "name": label, "arguments": {...}}.'}})
        return 1
    emit(out)
    return 0


def run_route(args) -> int:
    from dataclasses import asdict

    from assistant.brains.lexical import LexicalRouter
    from assistant.brains.router import ROUTER_DIR, RouteInput, Router, decide, regex_route
    from assistant.cli import emit
    from tools.registry import all_tools

    tools, where = all_tools(), args.adapter or ROUTER_DIR
    item = RouteInput.for_message(args.message)
    res = Router(where).route(item)
    lexical = LexicalRouter.load(where)
    proba = lexical.route_proba([item])[0] if lexical else None
    top = dict(sorted(proba.items(), key=lambda kv: -kv[1])[:3]) if proba else None
    emit({"router": asdict(res) | {"margin": round(res.margin, 4)},
          "lexical": {k: round(v, 4) for k, v in top.items()} if top else None,
          "brain": asdict(decide(res, proba, args.message, tools)),
          "regex": asdict(regex_route(item, tools))})
    return 0
