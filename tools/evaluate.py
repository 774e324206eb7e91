"""`evaluate`: compare candidates (base, adapters, few-shot prompts) on an eval set, with CIs, plots and a report.

Every metric has a value, its n and a 95% percentile-bootstrap CI; differences between candidates use a paired
bootstrap (the same resampled items for both), so "the adapter beats 3-shot by +0.40 [0.28, 0.52]" is a claim a
reviewer can check. Results go to the store (`Evaluation`), a JSON file, `report.md` and PNG plots.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tools.dataset.audit import COLUMNS_FIELD
from tools.registry import ToolInput, tool

# The engine a candidate runs on unless it names one: the managed vLLM server where it runs or can start,
# else transformers in-process. Perplexity always comes from the transformers engine (it can score).
DEFAULT_ENGINE = "auto"

Metric = Literal["exact_match", "accuracy", "f1", "rouge_l", "json_valid", "perplexity", "judge"]


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field("default", description="model name (`default` = bundled SmolLM2-135M-Instruct) or local dir")
    adapter: str | None = Field(None, description="PEFT adapter dir (e.g. a run's adapter_path), or a job id")
    few_shot: int = Field(0, ge=0, le=32, description="k demonstrations from train_path put before each prompt")
    train_path: str | None = Field(None, description="where few-shot demonstrations come from (default: the "
                                                     "evaluate call's train_path)")
    system_prompt: str | None = Field(None, description="replaces the eval rows' system message")
    name: str | None = Field(None, description="label in tables and plots (default: derived)")
    engine: str | None = Field(None, description="engine spec (default auto:<model>: the managed vLLM server "
                                                 "where it runs, else transformers); e.g. transformers:<model>, "
                                                 "openai:http://127.0.0.1:8000/v1")


class EvaluateInput(ToolInput):
    eval_path: str = Field(description="held-out rows with reference answers (messages / prompt+completion)")
    candidates: list[Candidate] = Field(min_length=1, description="what to compare; the first is the baseline")
    metrics: list[Metric] = Field(default_factory=lambda: ["exact_match", "accuracy", "f1", "rouge_l"],
                                  description="metrics; accuracy/f1 only when answers form a label set; "
                                              "judge needs `judge`")
    train_path: str | None = Field(None, description="default source of few-shot demonstrations")
    columns: dict[str, str] | None = COLUMNS_FIELD
    judge: str | None = Field(None, description="engine spec of a judge model for pairwise win rates "
                                                "(both orders; ties reported)")
    json_schema: dict | None = Field(None, description="schema for json_valid (outputs must parse and match)")
    baseline: str | None = Field(None, description="name of the candidate the others are compared with "
                                                   "(default: the first)")
    compare: Literal["baseline", "all_pairs"] = Field(
        "baseline", description="baseline: each candidate vs the baseline; all_pairs: every later candidate vs "
                                "every earlier one")
    limit: int | None = Field(None, ge=1, description="evaluate only the first N rows")
    sample: int | None = Field(None, ge=1, description="evaluate a seeded sample of N rows, stratified by label "
                                                       "when the answers form a label set")
    decoding: Literal["auto", "labels", "first_line", "free"] = Field(
        "auto", description="labels: the answer is constrained to one of the label strings; first_line: stop at "
                            "the first newline; free: generate up to max_new_tokens. auto: labels when the answers "
                            "form a label set, else first_line when every reference is one line, else free")
    max_new_tokens: int | None = Field(None, ge=1, le=4096, description="default: 1.5x the longest reference")
    batch_size: int = Field(16, ge=1, le=256, description="requests per generate batch")
    bootstrap: int = Field(1000, ge=100, le=20000, description="bootstrap resamples for CIs")
    seed: int = Field(0, description="seed for few-shot choice and the bootstrap")
    job_id: str | None = Field(None, description="the training job this evaluation belongs to (store link)")
    out_dir: str | None = Field(None, description="where report.md, JSON and plots go (default: data dir)")
    overwrite: bool = Field(False, description="replace report files that already exist in out_dir")


class EvaluateOutput(BaseModel):
    evaluation_id: int | None
    n: int
    results: list[dict]
    comparisons: list[dict]
    report_path: str
    json_path: str
    plots: list[str]
    predictions_paths: dict[str, str]
    prediction_check: dict | None = Field(None, description="a prior recommend_strategy prediction for this eval "
                                                            "set, restated against the measured gap")
    notes: list[str] = Field(default_factory=list)
    sample: dict | None = Field(None, description="when a sample was evaluated: n, of (rows in the file), seed, "
                                                  "stratified, and label coverage")
    decoding: dict | None = Field(None, description="how answers were generated (mode; number of labels)")


def _resolve_adapter(adapter: str | None) -> tuple[str | None, str | None]:
    """An adapter dir or a job id -> (adapter dir, job id)."""
    if not adapter:
        return None, None
    from runtime.paths import resolve_path

    p = Path(adapter).expanduser()
    if not p.is_absolute() and not (resolve_path(adapter).exists()):
        try:
            from runtime.store import Job, session

            with session() as s:
                job = s.get(Job, adapter)
            if job is not None:
                path = (job.result or {}).get("adapter_path") or str(Path(job.run_dir or "") / "adapter")
                return path, job.id
        except Exception:  # noqa: BLE001 - fall through to the path check
            pass
    path = resolve_path(adapter, must_exist=True)
    return str(path), None


def _candidate_name(c: Candidate, i: int) -> str:
    if c.name:
        return c.name
    base = "base" if c.model == "default" else Path(c.model).name
    if c.adapter:
        base = f"{base}+adapter:{Path(c.adapter).name if len(Path(c.adapter).parts) < 2 else Path(c.adapter).parent.name}"
    if c.few_shot:
        base += f"+{c.few_shot}shot"
    if c.system_prompt:
        base += "+sys"
    return base


def _metrics_jsonl_for(adapter_path: str | None, job_id: str | None) -> Path | None:
    if job_id:
        try:
            from runtime.store import Job, session

            with session() as s:
                job = s.get(Job, job_id)
            if job and job.metrics_path and Path(job.metrics_path).exists():
                return Path(job.metrics_path)
        except Exception:  # noqa: BLE001
            pass
    if adapter_path:
        p = Path(adapter_path)
        for d in (p, *list(p.parents)[:2]):
            if (d / "metrics.jsonl").exists():
                return d / "metrics.jsonl"
    return None


def run_evaluation(args: EvaluateInput) -> EvaluateOutput:
    from runtime.errors import BadInput, FtpilotError
    from runtime.paths import sha256_file
    from tools import _evalcore as ec

    eval_file = _resolve(args.eval_path)
    every = ec.load_examples(eval_file, columns=args.columns)
    pools = _Pools(args.columns)
    # The task's labels come from every reference at hand (the whole eval file and the train file), not from the
    # rows evaluated: a sample of 60 rows of a 77-intent set is still classification.
    task_refs = [e.reference for e in every] + [e.reference for e in pools.get(args.train_path)]
    labels = ec.label_set(task_refs)
    examples = every[:args.limit] if args.limit else every
    sample = None
    if args.sample and args.sample < len(examples):
        of = len(examples)
        examples = ec.sample_examples(examples, args.sample, seed=args.seed, labels=labels)
        sample = {"n": len(examples), "of": of, "seed": args.seed, "stratified": bool(labels),
                  "coverage": ec.label_coverage(examples, labels)}
    decoding = ec.choose_decoding(args.decoding, [e.reference for e in examples],
                                  ec.label_spellings(task_refs, labels) if labels else None,
                                  json_output="json_valid" in args.metrics)
    notes: list[str] = []
    names = [_candidate_name(c, i) for i, c in enumerate(args.candidates)]
    for i, nm in enumerate(names):  # unique names
        if names.count(nm) > 1:
            names[i] = f"{nm}#{i + 1}"
    baseline = args.baseline or names[0]
    if baseline not in names:
        raise BadInput(f"baseline {baseline!r} is not a candidate name", hint=f"Names: {', '.join(names)}")
    if "judge" in args.metrics and not args.judge:
        notes.append("judge metric skipped: no judge engine given")
    if ("accuracy" in args.metrics or "f1" in args.metrics) and not labels:
        notes.append("accuracy/f1 skipped: the reference answers do not form a label set")
    targets = _targets(args, eval_file, names)  # refused now, not after an hour of generation
    prepared, job_links = _prepare(args, names, examples, pools, notes)
    runs = _run(args, prepared, examples, labels, decoding, notes)
    if all(r.error for r in runs):
        raise FtpilotError(f"every candidate failed: {runs[0].name}: {runs[0].error}", code="engine_failed",
                           hint="Check the engine (a server that is down, a model that does not load), then "
                                "evaluate again.")

    comparisons = _comparisons(args, runs, baseline, examples, notes)
    results = [_result(r, args, decoding) for r in runs]
    sha = sha256_file(eval_file)
    prediction_check = _prediction_check(sha, results, comparisons, baseline)
    out = {"eval_path": str(eval_file), "dataset_sha256": sha, "n": len(examples), "labels": labels,
           "baseline": baseline, "decoding": decoding.describe(), "sample": sample, "results": results,
           "comparisons": comparisons, "prediction_check": prediction_check, "notes": notes,
           "created": time.strftime("%Y%m%d-%H%M%S")}
    _write_outputs(targets, args, out, examples, runs, job_links)

    from runtime.store import Evaluation, add

    job_id = args.job_id or next(iter(job_links.values()), None)
    row = add(Evaluation(job_id=job_id, eval_path=str(eval_file), dataset_sha256=sha,
                         results={"kind": "evaluation", **out}, report_path=str(targets["report"])))
    return EvaluateOutput(evaluation_id=row.id, n=len(examples), results=results, comparisons=comparisons,
                          report_path=str(targets["report"]), json_path=str(targets["json"]), plots=out["plots"],
                          predictions_paths={k: str(v) for k, v in targets["predictions"].items()},
                          prediction_check=prediction_check, notes=notes, sample=sample, decoding=out["decoding"])


class _Pools:
    """Train files read once per call (labels and every few-shot candidate use them)."""

    def __init__(self, columns: dict[str, str] | None):
        self.columns = columns
        self._by_path: dict[str, list] = {}

    def get(self, path: str | None) -> list:
        from tools import _evalcore as ec

        if not path:
            return []
        if path not in self._by_path:
            self._by_path[path] = ec.load_examples(_resolve(path), columns=self.columns)
        return self._by_path[path]


def _prepare(args: EvaluateInput, names: list[str], examples, pools: _Pools, notes: list[str]):
    """Adapter, demonstrations and engine of every candidate, checked before the first one runs: a bad adapter
    path or an engine that cannot start is an error now, not after an hour of generation."""
    from runtime.errors import BadInput
    from tools import _evalcore as ec

    prepared, job_links = [], {}
    eval_prompts = {json.dumps(e.prompt) for e in examples}
    for cand, name in zip(args.candidates, names):
        adapter, job_id = _resolve_adapter(cand.adapter)
        if job_id:
            job_links[name] = job_id
        shots: list = []
        if cand.few_shot:
            tp = cand.train_path or args.train_path
            if not tp:
                raise BadInput(f"candidate {name}: few_shot needs a train_path",
                               hint="Give train_path on the candidate or the evaluate call.")
            shots = ec.select_shots(pools.get(tp), cand.few_shot, seed=args.seed)
            if any(json.dumps(s.prompt) in eval_prompts for s in shots):
                notes.append(f"{name}: a few-shot demonstration also appears in the eval set")
        prepared.append((cand, name, adapter, job_id, shots, _engine(cand)))
    return prepared, job_links


def _run(args: EvaluateInput, prepared, examples, labels, decoding, notes: list[str]) -> list:
    """Generate and score each candidate in turn, with progress (rows done, rate, ETA) on stderr and to
    `runtime.progress` subscribers."""
    from runtime.progress import Tracker
    from tools import _evalcore as ec

    n, refs = len(examples), [e.reference for e in examples]
    runs: list[ec.CandidateRun] = []
    tracker = Tracker("evaluate", n * len(prepared))
    for k, (cand, name, adapter, job_id, shots, engine) in enumerate(prepared, 1):
        msgs = [ec.build_messages(e, system_prompt=cand.system_prompt, shots=shots) for e in examples]
        budget = args.max_new_tokens or ec.answer_token_budget(engine, decoding.choices or refs)
        tracker.advance(stage=f"{name} ({k}/{len(prepared)})")
        comps, wall = ec.run_prompts(engine, msgs, adapter=adapter, batch_size=args.batch_size,
                                     sampling=_sampling(budget, decoding), json_schema=decoding.json_schema,
                                     on_done=tracker.advance)
        run = ec.CandidateRun(name, {**cand.model_dump(), "adapter_resolved": adapter, "job_id": job_id,
                                     "few_shot_rows": [s.row for s in shots], "max_new_tokens": budget},
                              [decoding.prediction(c) for c in comps], comps, wall, msgs, engine=engine,
                              failed=[i for i, c in enumerate(comps) if c.finish_reason == "error"])
        if run.error:
            notes.append(f"{name}: no score: {run.error}")
        else:
            if run.failed:
                notes.append(f"{name}: {len(run.failed)} of {n} requests failed; they are scored as wrong "
                             f"(first error: {(comps[run.failed[0]].error or '')[:200]})")
            _score(run, args, examples, labels, adapter, notes)
        runs.append(run)
    tracker.finish()
    return runs


def _resolve(path: str) -> Path:
    from runtime.paths import resolve_path

    return resolve_path(path, must_exist=True)


def _engine(cand: Candidate):
    from runtime.engines import get_engine

    return get_engine(cand.engine or f"{DEFAULT_ENGINE}:{cand.model}")


def _scorer(run):
    """The engine that scores perplexity: the candidate's own when it can, else transformers on the same model
    (a local model served by vLLM, say); None for a remote model."""
    if hasattr(run.engine, "score"):
        return run.engine
    spec = run.spec.get("engine") or ""
    if spec.startswith(("openai:", "http://", "https://")):
        return None
    from runtime.engines import get_engine

    return get_engine(f"transformers:{run.spec['model']}")


def _sampling(budget: int, decoding):
    from runtime.engines import Sampling

    return Sampling(max_new_tokens=budget, stop=decoding.stop)


def _comparisons(args: EvaluateInput, runs: list, baseline: str, examples, notes: list[str]) -> list[dict]:
    from tools import _evalcore as ec

    scored = [r for r in runs if not r.error]
    by_name = {r.name: r for r in runs}
    if by_name[baseline].error and len(scored) > 1 and args.compare == "baseline":
        notes.append(f"no comparisons with the baseline {baseline}: it has no score")
    if args.compare == "all_pairs":
        pairs = [(scored[i], scored[j]) for j in range(len(scored)) for i in range(j)]
    else:
        base_run = by_name[baseline]
        pairs = [] if base_run.error else [(base_run, r) for r in scored if r.name != baseline]
    comparisons: list[dict] = []
    for base_run, r in pairs:
        comp = {"candidate": r.name, "baseline": base_run.name, "metrics": {}}
        for mname, m in r.metrics.items():
            if mname in base_run.metrics:
                comp["metrics"][mname] = ec.paired_delta(base_run.metrics[mname], m, args.bootstrap, args.seed)
        if "judge" in args.metrics and args.judge:
            comp["judge"] = _judge(args, examples, base_run, r)
        comparisons.append(comp)
    return comparisons


def _result(r, args: EvaluateInput, decoding) -> dict:
    import numpy as np

    from tools import _evalcore as ec

    ok = [c for c in r.completions if c.finish_reason != "error"]
    lat = [c.latency_s for c in ok]
    toks = sum(c.completion_tokens for c in ok)
    return {
        "name": r.name, "candidate": r.spec, "status": "failed" if r.error else "ok", "error": r.error,
        "failed_requests": len(r.failed),
        "metrics": {k: ec.summarize(m, args.bootstrap, args.seed) for k, m in r.metrics.items()},
        "latency_s": {"p50": ec.percentile(lat, 50), "p95": ec.percentile(lat, 95),
                      "mode": f"batched (batch_size={args.batch_size}): a request's latency is its batch's"},
        "tokens_per_s": round(toks / r.wall_s, 2) if r.wall_s else None,
        "rows_per_s": round(len(r.completions) / r.wall_s, 3) if r.wall_s else None,
        "prompt_tokens_mean": round(float(np.mean([c.prompt_tokens for c in ok])), 1) if ok else None,
        "completion_tokens": toks, "wall_s": round(r.wall_s, 2), "engine": r.engine.describe(),
        "decoding": decoding.describe(), "max_new_tokens": r.spec["max_new_tokens"],
    }


def _targets(args: EvaluateInput, eval_file: Path, names: list[str]) -> dict:
    """The files this call writes. A named out_dir is the person's: its files follow the output rules (never an
    input, never an existing file unless `overwrite`). The default is a new folder in the data dir."""
    from runtime.outputs import check_distinct, check_output
    from runtime.paths import data_subdir, resolve_path

    if args.out_dir:
        out_dir = resolve_path(args.out_dir)
        inputs = [args.eval_path, args.train_path, *(c.train_path for c in args.candidates)]

        def target(name: str) -> Path:
            return check_output(out_dir / name, inputs=inputs, overwrite=args.overwrite)
    else:
        base = data_subdir("evaluations") / f"eval-{time.strftime('%Y%m%d-%H%M%S')}-{eval_file.stem}"
        out_dir, i = base, 1
        while out_dir.exists():
            i += 1
            out_dir = base.with_name(f"{base.name}-{i}")

        def target(name: str) -> Path:
            return out_dir / name
    t = {"predictions": {nm: target(f"predictions-{_slug(nm)}.jsonl") for nm in names},
         "json": target("evaluation.json"), "report": target("report.md"),
         "metrics": target("metrics.png"), "loss_curves": target("loss_curves.png")}
    check_distinct([*t["predictions"].values(), t["json"], t["report"], t["metrics"], t["loss_curves"]])
    return t


def _write_outputs(targets: dict, args: EvaluateInput, out: dict, examples, runs, job_links: dict[str, str]) -> None:
    """Predictions, plots, evaluation.json and report.md, written together (all or nothing)."""
    from runtime.outputs import OutputSet

    with OutputSet(overwrite=args.overwrite) as files:
        for r in runs:
            with files.open(targets["predictions"][r.name]) as f:
                for e, c, p in zip(examples, r.completions, r.predictions):
                    f.write(json.dumps({"row": e.row, "reference": e.reference, "prediction": p, "text": c.text,
                                        "finish_reason": c.finish_reason, "error": c.error,
                                        "completion_tokens": c.completion_tokens, "latency_s": c.latency_s}) + "\n")
        out["plots"] = [str(p) for p in _plots(files, targets, out["results"], runs, job_links)]
        files.open(targets["json"]).write(json.dumps(out, indent=2))
        files.open(targets["report"]).write(_report(out, examples, runs))


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s)[:80]


def _score(run, args: EvaluateInput, examples, labels, adapter, notes: list[str]) -> None:
    import math

    import numpy as np

    from runtime.engines import check_schema
    from tools import _evalcore as ec

    preds, refs = run.predictions, [e.reference for e in examples]
    if "exact_match" in args.metrics:
        run.metrics["exact_match"] = ec.mean_metric(
            "exact_match", [float(ec.normalize(p) == ec.normalize(r)) for p, r in zip(preds, refs)])
    if labels and ("accuracy" in args.metrics or "f1" in args.metrics):
        pl = [ec.extract_label(p, labels) for p in preds]
        rl = [ec.normalize(r) for r in refs]
        if "accuracy" in args.metrics:
            run.metrics["accuracy"] = ec.mean_metric("accuracy", [float(p == r) for p, r in zip(pl, rl)],
                                                     note="label named in the output (first label word)")
        if "f1" in args.metrics:
            pc, rc = ec.label_codes(pl, labels), ec.label_codes(rl, labels)
            run.metrics["f1"] = ec.MetricData("f1", len(pl), lambda idx: ec.macro_f1_codes(pc[idx], rc[idx],
                                                                                         len(labels)),
                                              note="macro F1")
    if "rouge_l" in args.metrics:
        run.metrics["rouge_l"] = ec.mean_metric("rouge_l", [ec.rouge_l(p, r) for p, r in zip(preds, refs)])
    if "json_valid" in args.metrics:
        run.metrics["json_valid"] = ec.mean_metric(
            "json_valid", [float(check_schema(p.strip(), args.json_schema)[1] is None) for p in preds],
            note="parses" + (" and matches the schema" if args.json_schema else ""))
    if "perplexity" in args.metrics:
        scorer = _scorer(run)
        if scorer is None:
            notes.append(f"{run.name}: perplexity needs the model's weights here (the transformers engine)")
        else:
            convs = [m + [{"role": "assistant", "content": r}] for m, r in zip(run.messages, refs)]
            scored = scorer.score(convs, adapter=adapter, batch_size=args.batch_size)
            nll = np.array([s[0] for s in scored])
            tok = np.array([max(s[1], 1) for s in scored])
            run.metrics["perplexity"] = ec.MetricData(
                "perplexity", len(nll), lambda idx: float(math.exp(nll[idx].sum() / tok[idx].sum())),
                higher_is_better=False, note="of the reference answers, given the candidate's prompt")
            run.metrics["eval_loss"] = ec.MetricData(
                "eval_loss", len(nll), lambda idx: float(nll[idx].sum() / tok[idx].sum()), higher_is_better=False,
                note="mean token NLL of the reference answers")


JUDGE_SCHEMA = {"type": "object", "properties": {"winner": {"type": "string", "enum": ["A", "B", "tie"]}},
                "required": ["winner"], "additionalProperties": False}


def _judge(args: EvaluateInput, examples, base, cand) -> dict:
    """Pairwise judge, both orders. A win needs the candidate preferred in both orders (or one win + one tie);
    disagreement between the orders counts as a tie and is reported as position-inconsistent."""
    import numpy as np

    from runtime.engines import ChatRequest, Sampling, get_engine
    from tools import _evalcore as ec
    from tools._prompts import load_prompt

    judge = get_engine(args.judge)
    tmpl = load_prompt("judge_pairwise")
    reqs = []
    for e, pb, pc in zip(examples, base.predictions, cand.predictions):
        prompt = "\n".join(f"{m['role']}: {m['content']}" for m in e.prompt)
        for a, b in ((pc, pb), (pb, pc)):
            reqs.append(ChatRequest([{"role": "user", "content": tmpl.text.format(prompt=prompt, reference=e.reference,
                                                                                 a=a, b=b)}],
                                    json_schema=JUDGE_SCHEMA))
    outs = judge.generate(reqs, Sampling(max_new_tokens=16), batch_size=args.batch_size)
    score, wins, losses, ties, inconsistent, invalid = [], 0, 0, 0, 0, 0
    for i in range(0, len(outs), 2):
        w1 = (outs[i].parsed or {}).get("winner") if outs[i].error is None else None
        w2 = (outs[i + 1].parsed or {}).get("winner") if outs[i + 1].error is None else None
        invalid += (w1 is None) + (w2 is None)
        c = (w1 == "A") + (w2 == "B")     # candidate preferred
        b = (w1 == "B") + (w2 == "A")     # baseline preferred
        if c > b:
            wins += 1
            score.append(1.0)
        elif b > c:
            losses += 1
            score.append(0.0)
        else:
            ties += 1
            score.append(0.5)
            inconsistent += int(c == 1 and b == 1)
    arr = np.array(score)
    m = ec.MetricData("judge", len(arr), lambda idx: float(arr[idx].mean()))
    s = ec.summarize(m, args.bootstrap, args.seed)
    nn = len(arr)
    return {"judge": judge.describe(), "prompt": f"prompts/judge_pairwise.md@{tmpl.version}", "n": nn,
            "win_rate": round(wins / nn, 4), "loss_rate": round(losses / nn, 4), "tie_rate": round(ties / nn, 4),
            "position_inconsistent": inconsistent, "invalid_judgements": invalid,
            "score": s["value"], "score_ci95": s["ci95"], "score_note": "wins + ties/2 over n, 0.5 = no preference"}


def _prediction_check(sha: str, results: list[dict], comparisons: list[dict], baseline: str) -> dict | None:
    """Find the latest recommend_strategy run on this eval set and restate its predicted gap vs the measurement."""
    try:
        from sqlmodel import select

        from runtime.store import Evaluation, session

        with session() as s:
            rows = s.exec(select(Evaluation).where(Evaluation.dataset_sha256 == sha)
                          .order_by(Evaluation.id.desc())).all()
        rec = next((r.results for r in rows if (r.results or {}).get("kind") == "recommendation"), None)
    except Exception:  # noqa: BLE001
        return None
    if not rec:
        return None
    metric = rec.get("metric")
    best_prompt = rec.get("best_prompt_score")
    best = None
    for r in results:
        m = r["metrics"].get(metric)
        if m and m["value"] is not None and (best is None or m["value"] > best[1]):
            best = (r["name"], m["value"])
    out = {"recommendation": rec.get("recommendation"), "metric": metric,
           "predicted_prompting_score": best_prompt, "predicted_gap": rec.get("gap"),
           "target": rec.get("target")}
    if best and best_prompt is not None:
        out.update(best_candidate=best[0], measured_best=best[1],
                   measured_gain_over_prompting=round(best[1] - best_prompt, 4))
    return out


def _curves(runs, job_links: dict[str, str]) -> list[tuple[str, list[dict]]]:
    """The training loss curve of each evaluated adapter whose run is known."""
    curves = []
    for r in runs:
        mp = _metrics_jsonl_for(r.spec.get("adapter_resolved"), r.spec.get("job_id") or job_links.get(r.name))
        if mp:
            rows = [json.loads(x) for x in mp.read_text().splitlines() if x.strip().startswith("{")]
            curves.append((r.name, rows))
    return curves


def _plots(files, targets: dict[str, Path], results: list[dict], runs, job_links: dict[str, str]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    metric_names = sorted({k for r in results for k in r["metrics"]})
    if metric_names:
        ncols = min(4, len(metric_names))
        nrows = -(-len(metric_names) // ncols)
        fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols + 0.5, 3.4 * nrows), squeeze=False)
        for ax in axes.flat[len(metric_names):]:
            ax.axis("off")
        for ax, mname in zip(axes.flat, metric_names):
            names, vals, lo, hi = [], [], [], []
            for r in results:
                m = r["metrics"].get(mname)
                if not m or m["value"] is None:
                    continue
                names.append(r["name"])
                vals.append(m["value"])
                lo.append(max(0.0, m["value"] - (m["ci95"][0] if m["ci95"][0] is not None else m["value"])))
                hi.append(max(0.0, (m["ci95"][1] if m["ci95"][1] is not None else m["value"]) - m["value"]))
            ax.bar(range(len(names)), vals, yerr=[lo, hi], capsize=4, color="#4C72B0")
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
            ax.set_title(mname)
        fig.suptitle("metrics with 95% bootstrap CIs")
        fig.tight_layout()
        fig.savefig(files.open(targets["metrics"], "wb"), format="png", dpi=110)
        plt.close(fig)
        paths.append(targets["metrics"])
    curves = _curves(runs, job_links)
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for name, rows in curves:
            for key, style in (("loss", "-"), ("eval_loss", "o--")):
                pts = [(row["step"], row[key]) for row in rows if isinstance(row.get(key), (int, float))
                       and "step" in row]
                if pts:
                    ax.plot(*zip(*pts), style, label=f"{name} {key}")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend(fontsize=7)
        ax.set_title("training loss of the runs evaluated")
        fig.tight_layout()
        fig.savefig(files.open(targets["loss_curves"], "wb"), format="png", dpi=110)
        plt.close(fig)
        paths.append(targets["loss_curves"])
    return paths


def _fmt(m: dict | None) -> str:
    if not m or m.get("value") is None:
        return "-"
    lo, hi = m["ci95"]
    return f"{m['value']:.3f} [{lo:.3f}, {hi:.3f}]" if lo is not None else f"{m['value']:.3f}"


def _labels_line(labels: list[str] | None) -> str:
    if not labels:
        return "open-ended answers"
    shown = ", ".join(labels[:20])
    return f"{len(labels)}: {shown}" + (", ..." if len(labels) > 20 else "")


def _decoding_line(d: dict) -> str:
    return {"labels": f"constrained to the {d.get('labels')} label strings",
            "first_line": "stopped at the end of the first line",
            "free": "free text up to the token budget"}[d["mode"]]


def _sample_line(s: dict) -> str:
    cov = s.get("coverage")
    return (f"{s['n']} of {s['of']} rows, seed {s['seed']}" + (", stratified by label" if s["stratified"] else "")
            + (f", covering {cov['covered']} of {cov['labels']} labels" if cov else ""))


def _report(out: dict, examples, runs) -> str:
    res = out["results"]
    metric_names = sorted({k for r in res for k in r["metrics"]})
    lines = [f"# Evaluation report", "",
             f"- eval set: `{out['eval_path']}` (n = {out['n']}, sha256 {out['dataset_sha256'][:12]})",
             f"- labels: {_labels_line(out['labels'])}",
             f"- decoding: {_decoding_line(out['decoding'])}",
             *([f"- sample: {_sample_line(out['sample'])}"] if out.get("sample") else []),
             f"- baseline for comparisons: **{out['baseline']}**",
             "- every value: point estimate [95% percentile-bootstrap CI]; deltas: paired bootstrap", ""]
    lines += ["## Results", "", "| candidate | " + " | ".join(metric_names)
              + " | failed requests | latency p50 / p95 (s) | rows/s |",
              "|---|" + "---|" * len(metric_names) + "---|---|---|"]
    for r in res:
        cells = (["no score"] * len(metric_names) if r["status"] == "failed"
                 else [_fmt(r["metrics"].get(m)) for m in metric_names])
        lines.append(f"| {r['name']} | " + " | ".join(cells) + f" | {r['failed_requests']} "
                     f"| {r['latency_s']['p50']} / {r['latency_s']['p95']} | {r['rows_per_s']} |")
    if out["comparisons"]:
        lines += ["", "## Comparisons (candidate minus baseline, paired bootstrap)", "",
                  "| candidate | baseline | metric | delta [95% CI] | CI excludes 0 |", "|---|---|---|---|---|"]
        for c in out["comparisons"]:
            for m, d in c["metrics"].items():
                lines.append(f"| {c['candidate']} | {c['baseline']} | {m} | {d['delta']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
                             f" | {'yes' if d['excludes_zero'] else 'no'} |")
        judged = [c for c in out["comparisons"] if c.get("judge")]
        if judged:
            lines += ["", "## Pairwise judge (both answer orders)", "",
                      "| candidate | win | loss | tie | position-inconsistent | score [95% CI] |", "|---|---|---|---|---|---|"]
            for c in judged:
                j = c["judge"]
                lines.append(f"| {c['candidate']} | {j['win_rate']:.2f} | {j['loss_rate']:.2f} | {j['tie_rate']:.2f} "
                             f"| {j['position_inconsistent']} | {j['score']:.3f} [{j['score_ci95'][0]:.3f}, "
                             f"{j['score_ci95'][1]:.3f}] |")
    pc = out.get("prediction_check")
    if pc:
        lines += ["", "## Against the recommendation", "",
                  f"recommend_strategy said **{pc.get('recommendation')}** with the best prompted {pc.get('metric')} "
                  f"at {pc.get('predicted_prompting_score')} (gap {pc.get('predicted_gap')} to target "
                  f"{pc.get('target')})."]
        if "measured_best" in pc:
            lines.append(f"Measured now: {pc['best_candidate']} scores {pc['measured_best']}, "
                         f"{pc['measured_gain_over_prompting']:+.3f} over the predicted prompting score.")
    if out["notes"]:
        lines += ["", "## Notes", ""] + [f"- {x}" for x in out["notes"]]
    lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in out.get("plots", [])]
    lines += ["", "## Sample predictions", "", "| row | reference | " + " | ".join(r.name for r in runs) + " |",
              "|---|---|" + "---|" * len(runs)]
    for i, e in enumerate(examples[:8]):
        cells = [runs_pred.predictions[i].replace("|", "/").replace("\n", " ")[:60] for runs_pred in runs]
        lines.append(f"| {e.row} | {e.reference[:40]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@tool("evaluate", "Compare base/adapter/few-shot candidates on an eval set: metrics with bootstrap CIs, paired "
                  "deltas, judge win rate, report.md and plots.", cost="cpu_job")
def evaluate(args: EvaluateInput) -> EvaluateOutput:
    return run_evaluation(args)
