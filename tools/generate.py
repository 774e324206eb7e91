"""`generate_synthetic`: Self-Instruct / Evol-Instruct examples from seed rows with a teacher engine.

Every generated row carries provenance (teacher, prompt file and version, seed rows, sampling settings, judge
score) and goes through filters that are counted: schema-valid JSON from the teacher, length bounds, not a
near-duplicate (MinHash LSH, rensa: `runtime.neardup`) of a seed or of another generated row, and a judge score
threshold when a judge engine is given. Output is a new file in the seeds' format plus a manifest, written
together, never over the seeds or an existing file (unless `overwrite`). The result is audited with
`audit_dataset`.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tools.registry import ToolInput, tool

EVOL_OPERATIONS = [
    "adding one realistic constraint or detail",
    "making it more specific and concrete",
    "changing the wording and the situation while keeping the same kind of problem",
    "writing it as a different kind of customer or user would",
    "making it longer, with one more relevant sentence",
]


class GenerateInput(ToolInput):
    seeds_path: str = Field(description="seed examples (SFT formats); never modified")
    task: str | None = Field(None, description="what the examples teach; default: the seeds' system message")
    method: Literal["self_instruct", "evol_instruct"] = Field(
        "self_instruct", description="self_instruct: new examples from k shown seeds; evol_instruct: rewrite one "
                                     "seed into a harder/varied one")
    n: int = Field(20, ge=1, le=10_000, description="rows wanted (fewer if the filters reject too many)")
    teacher: str = Field("auto:default", description="engine spec of the teacher model (default: the managed vLLM "
                         "server where it runs, else transformers in-process)")
    judge: str | None = Field(None, description="engine spec of a judge that scores rows 1-5")
    judge_threshold: int = Field(3, ge=1, le=5, description="keep rows the judge scores at least this")
    out_path: str | None = Field(None, description="new file (default: <seeds>.synthetic.jsonl beside the seeds)")
    overwrite: bool = Field(False, description="replace out_path and its manifest if they exist")
    shots: int = Field(3, ge=1, le=10, description="seed examples shown per self_instruct request")
    temperature: float = Field(0.8, ge=0, le=2)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(160, ge=16, le=2048)
    min_prompt_chars: int = Field(10, ge=0)
    max_prompt_chars: int = Field(2000, ge=1)
    min_answer_chars: int = Field(1, ge=0)
    max_answer_chars: int = Field(2000, ge=1)
    near_duplicate_threshold: float = Field(0.7, gt=0, le=1, description="MinHash Jaccard (word 3-grams) "
                                                                          "at or above which a row is a duplicate")
    max_rounds: int = Field(4, ge=1, le=50, description="generation rounds before giving up on reaching n")
    seed: int = 0
    audit: bool = Field(True, description="run audit_dataset on the result")


class GenerateOutput(BaseModel):
    out_path: str
    manifest_path: str
    rows_written: int
    counts: dict[str, int] = Field(description="requests made and rows surviving each filter, in order")
    rejected_examples: dict[str, list[dict]]
    audit: dict | None
    teacher: dict
    prompt: str


def _echoes_instructions(prompt: str, task: str) -> bool:
    """A small teacher sometimes returns the task or a placeholder instead of a new request."""
    p = prompt.strip().lower()
    return (p in task.lower() or p.startswith("<") or "new request" in p or "example" in p.split()[:3]
            or p.startswith(("request:", "answer:")))


def _audit(path: Path) -> dict:
    from runtime.errors import FtpilotError
    from tools.dataset.audit import AuditDatasetInput, audit_dataset

    try:
        o = audit_dataset(AuditDatasetInput(path=str(path)))
    except FtpilotError as e:
        return {"ok": False, "error": e.to_dict(),
                "note": "audit_dataset could not run on the result; run it yourself before training"}
    errors = [f for f in o.findings if f.severity == "error"]
    return {"ok": True, "passed": not errors, "audit_id": o.audit_id, "rows": o.rows, "format": o.format,
            "errors": {f.check: f.count for f in errors},
            "warnings": {f.check: f.count for f in o.findings if f.severity == "warning"},
            "report_path": o.report_path}


@tool("generate_synthetic", "Generate synthetic training rows from seeds (Self-Instruct / Evol-Instruct) with a "
                            "teacher model; filtered, with provenance, audited; seeds untouched.", cost="cpu_job")
def generate_synthetic(args: GenerateInput) -> GenerateOutput:
    from runtime import dataio
    from runtime.engines import ChatRequest, Sampling, get_engine
    from runtime.errors import BadInput
    from runtime.neardup import NearDuplicateIndex, minhash
    from runtime.outputs import OutputSet, check_distinct, check_output, json_line
    from runtime.paths import resolve_path, sha256_file
    from tools import _evalcore as ec
    from tools._prompts import load_prompt

    seeds_file = resolve_path(args.seeds_path, must_exist=True)
    seeds_sha = sha256_file(seeds_file)
    seeds = ec.load_examples(seeds_file)
    as_messages = dataio.detect_format(seeds_file) in ("conversational", "openai_chat", "sharegpt")
    out = resolve_path(args.out_path) if args.out_path else seeds_file.with_name(seeds_file.stem + ".synthetic.jsonl")
    if out.resolve() == seeds_file.resolve():
        raise BadInput("out_path is the seeds file: generated data never overwrites the seeds",
                       hint="Choose another out_path.")
    manifest = out.with_name(out.stem + ".manifest.json")
    for p in (out, manifest):  # refused before any generation time is spent
        check_output(p, inputs=[seeds_file], overwrite=args.overwrite)
    check_distinct([out, manifest])
    systems = Counter(m["content"] for e in seeds for m in e.prompt if m["role"] == "system")
    system = systems.most_common(1)[0][0] if systems else None
    task = args.task or system
    if not task:
        raise BadInput("no task description: give `task` (the seeds have no system message to use)")
    labels = ec.label_set([e.reference for e in seeds]) if len(seeds) >= 4 else None
    if labels:  # keep the seeds' own spelling of each label
        spelled = {ec.normalize(e.reference): e.reference.strip() for e in seeds}
        label_values = [spelled[lab] for lab in labels]
    else:
        label_values = None
    schema = {"type": "object", "additionalProperties": False, "required": ["prompt", "answer"],
              # length bounds go into the grammar too, so a rambling teacher is cut at a valid JSON boundary
              "properties": {"prompt": {"type": "string", "minLength": args.min_prompt_chars,
                                        "maxLength": args.max_prompt_chars},
                             "answer": ({"type": "string", "enum": label_values} if label_values
                                        else {"type": "string", "minLength": args.min_answer_chars,
                                              "maxLength": args.max_answer_chars})}}
    label_rule = f" (one of: {', '.join(label_values)})" if label_values else ""
    pname = "synth_self_instruct" if args.method == "self_instruct" else "synth_evol_instruct"
    prompt = load_prompt(pname)
    teacher = get_engine(args.teacher)
    judge = get_engine(args.judge) if args.judge else None
    rng = random.Random(args.seed)
    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                        seed=args.seed)

    index = NearDuplicateIndex(args.near_duplicate_threshold)
    for e in seeds:
        index.add(f"seed{e.row}", " ".join(m["content"] for m in e.prompt if m["role"] == "user"))
    counts = Counter()
    rejected: dict[str, list[dict]] = {}
    accepted: list[dict] = []

    def reject(why: str, item: dict) -> None:
        counts[f"rejected_{why}"] += 1
        if len(rejected.setdefault(why, [])) < 3:
            rejected[why].append(item)

    def user_text(e) -> str:
        return " ".join(m["content"] for m in e.prompt if m["role"] == "user")

    t0 = time.perf_counter()
    for rnd in range(args.max_rounds):
        need = args.n - len(accepted)
        if need <= 0:
            break
        batch = min(max(need * 2, 4), 64)
        reqs, metas = [], []
        for _ in range(batch):
            if args.method == "self_instruct":
                shown = rng.sample(seeds, min(args.shots, len(seeds)))
                examples = "\n".join(json.dumps({"prompt": user_text(e), "answer": e.reference}) for e in shown)
                text = prompt.text.format(task=task, examples=examples, label_rule=label_rule)
                meta = {"seed_rows": [e.row for e in shown]}
            else:
                e = rng.choice(seeds)
                op = rng.choice(EVOL_OPERATIONS)
                text = prompt.text.format(task=task, example=json.dumps({"prompt": user_text(e), "answer": e.reference}),
                                          operation=op, label_rule=label_rule)
                meta = {"seed_rows": [e.row], "evolution": op}
            reqs.append(ChatRequest([{"role": "user", "content": text}], json_schema=schema))
            metas.append(meta)
        sampling.seed = args.seed + rnd
        comps = teacher.generate(reqs, sampling)
        counts["generated"] += len(comps)
        survivors = []
        for comp, meta in zip(comps, metas):
            if comp.error or not isinstance(comp.parsed, dict):
                reject("schema_invalid", {"text": comp.text[:200], "error": comp.error})
                continue
            counts["schema_valid"] += 1
            p, a = comp.parsed["prompt"].strip(), comp.parsed["answer"].strip()
            if not (args.min_prompt_chars <= len(p) <= args.max_prompt_chars
                    and args.min_answer_chars <= len(a) <= args.max_answer_chars):
                reject("length", {"prompt": p[:200], "answer": a[:200]})
                continue
            counts["length_ok"] += 1
            if _echoes_instructions(p, task):
                reject("echoes_instructions", {"prompt": p[:200]})
                continue
            counts["not_echo"] += 1
            mh = minhash(p)
            dup = index.find(p, mh)
            if dup:
                reject("near_duplicate", {"prompt": p[:200], "duplicate_of": dup})
                continue
            counts["not_duplicate"] += 1
            index.add(f"gen{counts['not_duplicate']}", p, mh)
            survivors.append((p, a, meta))
        if judge and survivors:
            jt = load_prompt("judge_score")
            jschema = {"type": "object", "additionalProperties": False, "required": ["score"],
                       "properties": {"score": {"type": "integer", "enum": [1, 2, 3, 4, 5]}}}
            jouts = judge.generate([ChatRequest([{"role": "user", "content": jt.text.format(task=task, prompt=p,
                                                                                          answer=a)}],
                                                json_schema=jschema) for p, a, _ in survivors],
                                   Sampling(max_new_tokens=16))
            kept = []
            for (p, a, meta), jo in zip(survivors, jouts):
                score = (jo.parsed or {}).get("score") if jo.error is None else None
                if score is None:
                    reject("judge_invalid", {"prompt": p[:200], "answer": a[:200], "judge_text": jo.text[:200]})
                    continue
                if score < args.judge_threshold:
                    reject("judge_low", {"prompt": p[:200], "answer": a[:200], "score": score})
                    continue
                counts["judge_passed"] += 1
                kept.append((p, a, {**meta, "judge_score": score, "judge": judge.describe(),
                                    "judge_prompt": jt.ref}))
            survivors = kept
        for p, a, meta in survivors:
            if len(accepted) >= args.n:
                counts["surplus_dropped"] += 1
                continue
            prov = {"generator": "ftpilot.generate_synthetic", "method": args.method, "teacher": teacher.describe(),
                    "prompt": prompt.ref, "seeds_path": str(seeds_file), "seeds_sha256": seeds_sha,
                    "sampling": {"temperature": args.temperature, "top_p": args.top_p, "seed": args.seed + rnd,
                                 "max_new_tokens": args.max_new_tokens}, **meta}
            if as_messages:
                msgs = ([{"role": "system", "content": system}] if system else []) + [
                    {"role": "user", "content": p}, {"role": "assistant", "content": a}]
                accepted.append({"messages": msgs, "provenance": prov})
            else:
                accepted.append({"prompt": p, "completion": a, "provenance": prov})
    counts["written"] = len(accepted)
    order = ["generated", "schema_valid", "length_ok", "not_echo", "not_duplicate"] + (["judge_passed"] if judge else []) + \
        ["written"]
    ordered = {k: counts.get(k, 0) for k in order}
    ordered.update({k: v for k, v in counts.items() if k not in ordered})
    manifest_text = json.dumps({
        "what": "synthetic rows generated from seeds; the seeds file was not modified",
        "seeds_path": str(seeds_file), "seeds_sha256": seeds_sha, "out_path": str(out), "method": args.method,
        "teacher": teacher.describe(), "judge": judge.describe() if judge else None, "prompt": prompt.ref,
        "filters": {"length": [args.min_prompt_chars, args.max_prompt_chars, args.min_answer_chars,
                               args.max_answer_chars], "near_duplicate_jaccard": args.near_duplicate_threshold,
                    "judge_threshold": args.judge_threshold if judge else None,
                    "labels": label_values},
        "counts": ordered, "rejected_examples": rejected, "seconds": round(time.perf_counter() - t0, 1)},
        indent=2)
    with OutputSet(overwrite=args.overwrite) as files:
        with files.open(out) as f:
            for row in accepted:
                f.write(json_line(row))
        files.open(manifest).write(manifest_text)
    audit = None
    if args.audit:
        audit = _audit(out) if accepted else {"ok": False,
                                              "note": "nothing to audit: every generated row was filtered out"}
    return GenerateOutput(out_path=str(out), manifest_path=str(manifest), rows_written=len(accepted), counts=ordered,
                          rejected_examples=rejected, audit=audit, teacher=teacher.describe(), prompt=prompt.ref)
