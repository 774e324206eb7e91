"""Scoring routers on labelled requests: right tool, exactly right arguments, 95% bootstrap intervals.

Arguments are compared as calls (`router.canonical`: defaults dropped, numbers by value), so "2e-4" and
0.0002 are the same learning rate. Intervals and paired differences come from the evaluate tool's machinery
(tools._evalcore), so they are computed the way every other ftpilot evaluation is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from assistant.brains.router import RouteInput, RouteResult, canonical, routable_fields

THRESHOLDS = (0.1, 0.2, 0.3, 0.5)


@dataclass
class Case:
    """One labelled request."""

    item: RouteInput
    name: str
    arguments: dict
    family: str = ""
    style: str = ""
    typo: bool = False
    project: dict = field(default_factory=dict)   # the project state the request was made in

    def to_dict(self) -> dict:
        return {"message": self.item.message, "context": self.item.context, "paths": self.item.paths,
                "job_ids": self.item.job_ids, "name": self.name, "arguments": self.arguments,
                "family": self.family, "style": self.style, "typo": self.typo, "project": self.project}

    @classmethod
    def from_dict(cls, d: dict) -> "Case":
        return cls(RouteInput(d["message"], d["context"], d["paths"], d["job_ids"]), d["name"], d["arguments"],
                   d.get("family", ""), d.get("style", ""), d.get("typo", False), d.get("project") or {})


def recorded_calls(records: list[dict]) -> tuple[list[Case], list[RouteResult], list[RouteResult]]:
    """A report's prediction records as (cases, the adapter's calls, the keyword table's calls): what the rules
    after the adapter (`router.decide`) are replayed on without the model."""
    cases = [Case.from_dict(r) for r in records]
    adapter = [RouteResult(r["predicted"]["name"], r["predicted"]["arguments"], r["predicted"]["margin"])
               for r in records]
    keywords = [RouteResult(r["keywords"]["name"], r["keywords"]["arguments"], runner_up=r["keywords"]["runner_up"],
                            source="regex") for r in records]
    return cases, adapter, keywords


def outside_cases(path) -> list[Case]:
    """The hand-written requests (outside.jsonl): a compact project per request."""
    from assistant.workflow import Project

    cases = []
    for line in open(path, encoding="utf-8"):
        if not line.strip():
            continue
        d = json.loads(line)
        p, spec = Project(), d.get("project") or {}
        for role in ("train", "eval", "preferences"):
            if spec.get(role):
                p.add_dataset(spec[role], role, "person")
        if spec.get("run"):
            job, tool, status = spec["run"]
            p.runs.append({"job_id": job, "tool": tool, "status": status})
        for key in spec.get("done", []):
            p.done[key] = "2026-01-01T00:00:00+00:00"
        cases.append(Case(RouteInput.for_message(d["message"], p), d["name"], d["arguments"], "outside", "outside",
                          project=p.model_dump(mode="json")))
    return cases


def correct(case: Case, res: RouteResult, tools: dict) -> tuple[bool, bool]:
    """(right tool, right call): the call the brain would make, the routed arguments over what the project
    knows, equals the expected one. A path the person did not say but the project holds anyway is no error."""
    if res.name != case.name or res.error:
        return False, False
    tool = tools.get(case.name)
    return True, effective(tool, res.arguments, case.project) == effective(tool, case.arguments, case.project)


def effective(tool, arguments: dict, project: dict) -> dict:
    from assistant.workflow import Project

    if tool is None:
        return {}
    known = Project.model_validate(project or {}).prefill(tool.input_model)
    fields = routable_fields(tool)
    return canonical(tool, {**{k: v for k, v in known.items() if k in fields}, **arguments})


def score(cases: list[Case], results: list[RouteResult], tools: dict, bootstrap: int = 1000, seed: int = 0) -> dict:
    from tools import _evalcore as ec

    flags = [correct(c, r, tools) for c, r in zip(cases, results)]
    tool_m = ec.mean_metric("tool_accuracy", [float(a) for a, _ in flags])
    args_m = ec.mean_metric("exact_call_accuracy", [float(b) for _, b in flags])
    secs = [r.seconds for r in results]
    return {"n": len(cases), "tool_accuracy": ec.summarize(tool_m, bootstrap, seed),
            "exact_call_accuracy": ec.summarize(args_m, bootstrap, seed),
            "seconds_mean": round(sum(secs) / len(secs), 4) if secs else None, "_metrics": (tool_m, args_m)}


def paired(a: dict, b: dict, bootstrap: int = 1000, seed: int = 0) -> dict:
    """b minus a on the same requests, per metric, with paired-bootstrap intervals."""
    from tools import _evalcore as ec

    return {name: ec.paired_delta(ma, mb, bootstrap, seed)
            for name, ma, mb in zip(("tool_accuracy", "exact_call_accuracy"), a["_metrics"], b["_metrics"])}


def margin_table(cases: list[Case], results: list[RouteResult], tools: dict) -> list[dict]:
    """What asking when the margin is small would do: share asked, accuracy of the calls still made."""
    rows = []
    for t in THRESHOLDS:
        kept = [(c, r) for c, r in zip(cases, results) if r.margin >= t]
        ok = [correct(c, r, tools)[1] for c, r in kept]
        rows.append({"margin_below": t, "asked": round(1 - len(kept) / len(cases), 4) if cases else None,
                     "exact_call_accuracy_of_rest": round(sum(ok) / len(ok), 4) if ok else None})
    return rows


def by_style(cases: list[Case], results: list[RouteResult], tools: dict) -> dict:
    out: dict[str, list[int]] = {}
    for c, r in zip(cases, results):
        key = c.style + (" (typo)" if c.typo else "")
        good = correct(c, r, tools)[1]
        out.setdefault(key, [0, 0])
        out[key][0] += int(good)
        out[key][1] += 1
    return {k: {"exact": v[0], "n": v[1]} for k, v in sorted(out.items())}


def mistakes(cases: list[Case], results: list[RouteResult], tools: dict, limit: int = 12) -> list[dict]:
    out = []
    for c, r in zip(cases, results):
        if not correct(c, r, tools)[1]:
            out.append({"message": c.item.message, "expected": {"name": c.name, "arguments": c.arguments},
                        "got": {"name": r.name, "arguments": r.arguments, "margin": round(r.margin, 3),
                                **({"error": r.error} if r.error else {})}})
    return out[:limit]


def public(summary: dict) -> dict:
    return {k: v for k, v in summary.items() if not k.startswith("_")}
