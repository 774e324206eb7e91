"""`ftpilot brain build`: ftpilot trains its own router with its own tools.

1. generate routing rows from the live tool registry and the phrasing families (whole families held out);
2. audit_dataset, then clean_dataset (exact duplicates, and rows that overlap the held-out families) and
   split_dataset (a validation split for eval loss);
3. a lexical classifier (character and word n-grams) on the same rows, and train_sft: a LoRA adapter on the
   bundled SmolLM2-135M-Instruct;
4. install both (fp16 safetensors; the classifier as arrays and a vocabulary) with the data card, report and
   reproduce.sh;
5. evaluate the installed adapter, the classifier, the brain that combines them, the base model (prompted with the
   tool list) and the keyword table on the
   held-out families and on hand-written outside requests: tool accuracy, exact call accuracy, 95% intervals,
   paired differences; the evaluate tool adds the held-out calls' perplexity under base and adapter.
Every step goes through `tools.call_tool`, as a person's call would; a failed step stops the build with its error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from assistant.brain_build import evaluation as ev
from assistant.brains.lexical import LexicalRouter
from assistant.brains.router import (NEXT_STEP, ROUTER_DIR, RouteInput, Router, decide, lexical_call, regex_route,
                                     stated_values)

HERE = Path(__file__).resolve().parent
OUTSIDE = HERE / "outside.jsonl"


class BuildError(Exception):
    """A step of the build failed; the message names it and carries the tool's error."""


@dataclass
class BuildConfig:
    seed: int = 0
    per_family: int = 8           # training rows per kept phrasing family
    per_held_family: int = 4      # evaluation rows per held-out family
    model: str = "default"
    lora_r: int = 16              # r 16 over r 8: held-out right tool 0.857 vs 0.821, same build time
    lora_alpha: int = 32
    lora_layers: int | None = None  # LoRA on the top N decoder layers only (backward stops below them, ~1.4x
                                    # faster); every layer: held-out tool 0.82 vs 0.76 with the top 15
    learning_rate: float = 2e-3
    epochs: float = 0.95          # 3 epochs of 435 rows: held-out tool 0.60; more phrasings beat more passes.
                                  # With 4 writers' rows: 0.95, brain 0.918 held-out, 13.9 min (21.7 before
                                  # the CPU LM head); 0.8, brain 0.882
    max_steps: int | None = None
    batch_size: int = 16
    max_length: int = 192
    val_rows: int = 32
    outside_limit: int | None = None
    latency_rows: int = 8
    perplexity_rows: int = 32     # the evaluate tool also generates each row: a sample bounds its time
    base_eval: bool = True
    install_dir: str = str(ROUTER_DIR)
    work_dir: str | None = None

    def argv(self) -> list[str]:
        """The `ftpilot brain build` options that rebuild with this config (install/work dirs left out)."""
        out = []
        for k, v in asdict(self).items():
            if k in ("install_dir", "work_dir") or v == getattr(BuildConfig, k, None) or v is None:
                continue
            flag = "--" + k.replace("_", "-")
            out += [flag] if v is True else [f"--no-{k.replace('_', '-')}"] if v is False else [flag, str(v)]
        return out


@dataclass
class Build:
    cfg: BuildConfig
    say: callable = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))
    steps: dict = field(default_factory=dict)
    loads: list = field(default_factory=list)

    def run(self) -> dict:
        start = time.perf_counter()
        self._load()
        from tools.registry import all_tools

        self.tools = all_tools()
        self.work = self._work_dir()
        data = self.step("data", self.generate)
        prepared = self.step("prepare", lambda: self.prepare(data))
        lexical = self.step("lexical", lambda: self.fit_lexical(prepared))
        run = self.step("train", lambda: self.train(prepared))
        installed = self.step("install", lambda: self.install(run) | self.install_lexical(lexical, data))
        results = self.step("evaluate", lambda: self.evaluate(data, installed, run))
        self._load()
        report = self.report(data, prepared, run, installed, results, time.perf_counter() - start)
        self.write_report(report)
        return report

    # --- steps ------------------------------------------------------------------------------------------
    def step(self, name: str, fn):
        self.say(f"[brain build] {name}…")
        t = time.perf_counter()
        out = fn()
        self.steps[name] = round(time.perf_counter() - t, 1)
        self._load()
        self.say(f"[brain build] {name} done in {self.steps[name]:.0f} s")
        return out

    def generate(self) -> dict:
        from runtime.outputs import write_jsonl

        from assistant.brain_build.data import families, held_out_families, make_rows

        fams = families(self.tools)
        held = held_out_families(fams, self.cfg.seed)
        train, heldout = make_rows(self.tools, self.cfg.seed, self.cfg.per_family, held, self.cfg.per_held_family)
        routing = write_jsonl(self.work / "routing.jsonl", [r.record() for r in train])
        held_path = write_jsonl(self.work / "heldout.jsonl", [r.record() for r in heldout])
        cases = [ev.Case(r.route_input(), r.meta["name"], r.arguments, r.family, r.style, r.typo, r.meta["project"])
                 for r in heldout]
        by_prompt = {(r.context, r.message): r for r in train}
        return {"routing": str(routing), "heldout": str(held_path), "rows": len(train), "heldout_rows": len(heldout),
                "families": sum(len(v) for v in fams.values()), "held_families": sorted(held),
                "labels": sorted(NEXT_STEP if k == "go_ahead" else k for k in fams), "cases": cases,
                "by_prompt": by_prompt}

    def prepare(self, data: dict) -> dict:
        audit = self.call("audit_dataset", {"path": data["routing"], "eval_path": data["heldout"]})
        clean = self.call("clean_dataset", {"path": data["routing"], "out_path": str(self.work / "routing.clean.jsonl"),
                                            "eval_path": data["heldout"], "drop_duplicates": "exact",
                                            "redact_pii": False})
        split = self.call("split_dataset", {"path": clean["out_path"], "eval_rows": self.cfg.val_rows,
                                            "seed": self.cfg.seed, "out_dir": str(self.work / "split")})
        return {"audit": {"rows": audit["rows"], "findings": [
                    {k: f[k] for k in ("check", "severity", "count", "message")} for f in audit["findings"]],
                    "report_path": audit["report_path"]},
                "clean": {k: clean[k] for k in ("input_rows", "output_rows", "dropped", "reasons", "out_path")},
                "split": {k: split[k] for k in ("train_path", "eval_path", "train_rows", "eval_rows")}}

    def fit_lexical(self, prepared: dict) -> LexicalRouter:
        """The second opinion (assistant/brains/lexical.py), on the adapter's own training split: message -> label."""
        messages, labels = [], []
        for line in open(prepared["split"]["train_path"], encoding="utf-8"):
            turns = json.loads(line)["messages"]
            messages.append(next(t["content"] for t in turns if t["role"] == "user"))
            labels.append(json.loads(turns[-1]["content"])["name"])
        return LexicalRouter.fit(messages, labels)

    def install_lexical(self, lexical: LexicalRouter, data: dict) -> dict:
        """Saved beside the adapter, then loaded back: on the held-out requests the installed copy must give the
        fitted one's probabilities."""
        dest = Path(self.cfg.install_dir)
        files = lexical.save(dest)
        probe = [c.item.message for c in data["cases"]]
        fitted, loaded = lexical.proba_batch(probe), LexicalRouter.load(dest).proba_batch(probe)
        worst = max((abs(a[k] - b[k]) for a, b in zip(fitted, loaded) for k in a), default=0.0)
        if worst > 1e-4:
            raise BuildError(f"the installed lexical classifier differs from the fitted one (by {worst:.2g})")
        return {"lexical": {"classes": len(lexical.classes), "features": int(lexical.coef.shape[1]),
                            "size_mb": round(sum(f.stat().st_size for f in files) / 2**20, 2)}}

    def train(self, prepared: dict) -> dict:
        c = self.cfg
        args = {"train_path": prepared["split"]["train_path"], "eval_path": prepared["split"]["eval_path"],
                "model": c.model, "lora_r": c.lora_r, "lora_alpha": c.lora_alpha, "learning_rate": c.learning_rate,
                "epochs": c.epochs, "batch_size": c.batch_size, "grad_accum": 1, "max_length": c.max_length,
                "seed": c.seed, "wait": True}
        if c.max_steps:
            args["max_steps"] = c.max_steps
        if c.lora_layers:
            args["lora_targets"] = top_layer_targets(c.model, c.lora_layers)
        out = self.call("train_sft", args)
        if out["status"] != "succeeded" or not out.get("adapter_path"):
            raise BuildError(f"train_sft ended {out['status']}: {out.get('error')}; log: {out.get('log_path')}")
        return out

    def install(self, run: dict) -> dict:
        """The adapter in fp16 (half the size; PEFT upcasts it on load) beside its config, replacing the shipped
        one: the build's purpose. The report and data card are written after the evaluation."""
        import torch
        from safetensors.torch import load_file, save

        from runtime.outputs import OutputSet

        src, dest = Path(run["adapter_path"]), Path(self.cfg.install_dir)
        tensors = {k: v.to(torch.float16).contiguous() for k, v in load_file(src / "adapter_model.safetensors").items()}
        config = json.loads((src / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = "SmolLM2-135M-Instruct" if self.cfg.model == "default" else self.cfg.model
        with OutputSet(overwrite=True) as files:
            files.open(dest / "adapter_model.safetensors", "wb").write(save(tensors, metadata={"format": "pt"}))
            files.open(dest / "adapter_config.json").write(json.dumps(config, indent=2) + "\n")
        from runtime.paths import sha256_file

        return {"dir": str(dest), "sha256": sha256_file(dest / "adapter_model.safetensors"),
                "size_mb": round((dest / "adapter_model.safetensors").stat().st_size / 2**20, 2)}

    def evaluate(self, data: dict, installed: dict, run: dict) -> dict:
        cfg = self.cfg
        sets = {"heldout_families": data["cases"], "outside": ev.outside_cases(OUTSIDE)[:cfg.outside_limit]}
        labels = data["labels"]
        routers = {"regex": None, "adapter": Router(installed["dir"], cfg.model, self.tools, labels)}
        if cfg.base_eval:
            routers["base"] = Router(None, cfg.model, self.tools, labels)
        lexical = LexicalRouter.load(installed["dir"])
        out: dict = {"sets": {}, "predictions": {}}
        for set_name, cases in sets.items():
            preds = route_all(routers, cases, self.tools,
                              lambda rname: self.say(f"[brain build]   routing {len(cases)} {set_name} requests with "
                                                     f"{rname}"))
            out["sets"][set_name], out["predictions"][set_name] = score_set(cases, preds, self.tools, lexical)
        out["latency"] = self.latency(routers["adapter"], sets["heldout_families"][: cfg.latency_rows])
        out["perplexity"] = self.perplexity(data["heldout"], installed, run)
        return out

    def latency(self, router: Router, cases: list) -> dict:
        """Routing one message at a time (model loaded), as the brain does."""
        secs = []
        for c in cases:
            t = time.perf_counter()
            router.route(c.item)
            secs.append(time.perf_counter() - t)
        secs.sort()
        return {"n": len(secs), "p50_s": round(secs[len(secs) // 2], 3) if secs else None,
                "max_s": round(secs[-1], 3) if secs else None, "load_avg_1m": os.getloadavg()[0]}

    def perplexity(self, heldout: str, installed: dict, run: dict) -> dict:
        """The evaluate tool on the held-out rows: perplexity of the expected calls under base and adapter."""
        from runtime.errors import FtpilotError
        from runtime.paths import resolve_path

        try:
            adapter = str(resolve_path(installed["dir"], must_exist=True))
        except FtpilotError:
            adapter = run["adapter_path"]  # the install dir is outside the workspace: the same adapter in fp32
        out = self.call("evaluate", {"eval_path": heldout, "metrics": ["perplexity"],
                                     "limit": self.cfg.perplexity_rows,
                                     "out_dir": str(self.work / "evaluation"),
                                     # in-process: a one-shot build does not leave a managed vLLM server behind
                                     "candidates": [{"engine": f"transformers:{self.cfg.model}", "name": "base"},
                                                    {"engine": f"transformers:{self.cfg.model}", "adapter": adapter,
                                                     "name": "router"}]})
        return {"results": {r["name"]: r["metrics"] for r in out["results"]},
                "comparisons": out["comparisons"], "report_path": out["report_path"]}

    # --- helpers ------------------------------------------------------------------------------------------
    def call(self, name: str, args: dict) -> dict:
        from tools.registry import call_tool

        res = call_tool(name, args)
        if not res.ok:
            err = res.error or {}
            raise BuildError(f"{name} failed: {err.get('message')} ({err.get('hint', '')})")
        return res.output

    def _work_dir(self) -> Path:
        from runtime.paths import resolve_path

        base = resolve_path(self.cfg.work_dir or "build/brain")
        work = base / time.strftime("run-%Y%m%d-%H%M%S")
        work.mkdir(parents=True, exist_ok=False)
        return work

    def _load(self) -> None:
        self.loads.append(round(os.getloadavg()[0], 2))

    # --- the report -------------------------------------------------------------------------------------------
    def report(self, data, prepared, run, installed, results, seconds) -> dict:
        import platform

        m = run.get("metrics") or {}
        return {
            "built": time.strftime("%Y-%m-%d %H:%M:%S"), "seconds": round(seconds, 1), "steps_s": self.steps,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                        "load_avg_1m_samples": self.loads,
                        "load_avg_1m_mean": round(sum(self.loads) / len(self.loads), 2)},
            "config": asdict(self.cfg) | {"install_dir": None, "work_dir": None},
            "reproduce": "ftpilot brain build " + " ".join(self.cfg.argv()), "reproduce_argv": self.cfg.argv(),
            "data": {k: data[k] for k in ("rows", "heldout_rows", "families", "held_families", "labels")},
            "prepare": prepared,
            "train": {"job_id": run["job_id"], "run_dir": run["run_dir"], **{k: m.get(k) for k in (
                "train_loss_first", "train_loss", "eval_loss_before", "eval_loss", "global_step", "train_runtime_s")}},
            "adapter": {k: installed[k] for k in ("sha256", "size_mb")}, "lexical": installed["lexical"],
            **{k: v for k, v in results.items() if k != "predictions"},
            "predictions": results["predictions"],
        }

    def write_report(self, report: dict) -> None:
        from assistant.brain_build.card import data_card, report_markdown, reproduce_sh

        dest = Path(self.cfg.install_dir)
        _write(dest / "report.json", json.dumps(report, indent=1, default=str) + "\n")
        _write(dest / "report.md", report_markdown(report))
        _write(dest / "README.md", data_card(report))
        _write(dest / "reproduce.sh", reproduce_sh(report))
        (dest / "reproduce.sh").chmod(0o755)
        _write(self.work / "report.json", json.dumps(report, indent=1, default=str) + "\n")


def score_set(cases: list, preds: dict, tools: dict, lexical: LexicalRouter) -> tuple[dict, list]:
    """One request set's section of the report: each router's accuracy, the lexical classifier alone (its label,
    then the stated values), the brain as it runs (`router.decide`: adapter or classifier, then the stated values),
    paired differences, margin tables, styles, mistakes, and the predictions."""
    a, x = preds["adapter"], preds["regex"]
    probs = lexical.route_proba([c.item for c in cases])
    preds = {**preds, "lexical": [stated_values(lexical_call(p), c.item.message, tools) for p, c in zip(probs, cases)],
             "brain": [decide(r, p, c.item.message, tools) for r, p, c in zip(a, probs, cases)]}
    summary = {name: ev.score(cases, res, tools) for name, res in preds.items()}
    deltas = {f"adapter-{r}": ev.paired(summary[r], summary["adapter"]) for r in summary if r in ("regex", "base")}
    deltas.update({f"{r}-regex": ev.paired(summary["regex"], summary[r]) for r in RULE_COLUMNS})
    deltas["brain-adapter"] = ev.paired(summary["adapter"], summary["brain"])
    section = {"routers": {k: ev.public(v) for k, v in summary.items()}, "deltas": deltas,
               "margins": ev.margin_table(cases, a, tools), "by_style": ev.by_style(cases, a, tools),
               "mistakes": ev.mistakes(cases, a, tools), "brain_mistakes": ev.mistakes(cases, preds["brain"], tools)}
    records = [{**c.to_dict(), "predicted": {"name": r.name, "arguments": r.arguments, "margin": round(r.margin, 4)},
                "keywords": {"name": k.name, "arguments": k.arguments, "runner_up": k.runner_up}}
               for c, r, k in zip(cases, a, x)]
    return section, records


def route_all(routers: dict, cases: list, tools: dict, say=lambda _name: None) -> dict:
    """Each router's calls on the cases; None stands for the keyword table."""
    items = [c.item for c in cases]
    out = {}
    for name, router in routers.items():
        say(name)
        out[name] = [regex_route(i, tools) for i in items] if router is None else router.route_batch(items)
    return out


LINEAR = {"self_attn": ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp": ("gate_proj", "up_proj", "down_proj")}


def top_layer_targets(model: str, n: int) -> list[str]:
    """The linear modules of the top `n` decoder layers (Llama naming, as the bundled model has)."""
    from runtime.models import resolve_model

    cfg = json.loads((Path(resolve_model(model).path) / "config.json").read_text())
    layers = int(cfg.get("text_config", cfg)["num_hidden_layers"])
    return [f"model.layers.{i}.{block}.{name}" for i in range(max(0, layers - n), layers)
            for block, names in LINEAR.items() for name in names]


def _write(path: Path, text: str) -> None:
    """Build artifacts replace the previous build's (that is what a rebuild is for), atomically."""
    from runtime.outputs import write_text

    write_text(path, text, overwrite=True)


def build(cfg: BuildConfig, say=None) -> dict:
    b = Build(cfg) if say is None else Build(cfg, say)
    return b.run()


MODEL_COLUMNS = ("regex", "base", "adapter")   # measured by running a model or the table at build time
RULE_COLUMNS = ("lexical", "brain")            # replayed from the recorded calls (`brain rescore`)


def rescore(install_dir: str | Path = ROUTER_DIR, refit_lexical: bool = False) -> dict:
    """The report's rule columns again, from its recorded adapter and keyword-table calls: the adapter's calls do not
    change when the rules after it (`router.decide`) do, so a rule change is measured without a rebuild. With
    `refit_lexical` (or where none is installed) the lexical classifier is first fitted again from the build's data
    (generate, audit, clean, split: seconds). Rewrites report.json, report.md and the data card beside the adapter;
    the adapter itself is untouched."""
    from tools.registry import all_tools

    tools, dest = all_tools(), Path(install_dir)
    report = json.loads((dest / "report.json").read_text())
    try:
        installed = LexicalRouter.load(dest)
    except ValueError:   # fitted by other code (it read messages otherwise): fit it again
        installed = None
    if refit_lexical or installed is None:
        report["lexical"] = _refit_lexical(report, dest)
        installed = LexicalRouter.load(dest)
    lexical = installed
    for set_name, records in report["predictions"].items():
        cases, adapter, keywords = ev.recorded_calls(records)
        section, _ = score_set(cases, {"adapter": adapter, "regex": keywords}, tools, lexical)
        old = report["sets"][set_name]
        seconds = {k: v.get("seconds_mean") for k, v in old["routers"].items()}   # the build timed them; a replay
        old["routers"] = {k: v for k, v in old["routers"].items() if k in MODEL_COLUMNS} | {   # does not
            k: section["routers"][k] | {"seconds_mean": seconds.get(k)} for k in RULE_COLUMNS}
        old["deltas"] = {k: v for k, v in old["deltas"].items() if k.startswith("adapter-")} | {
            k: v for k, v in section["deltas"].items() if not k.startswith("adapter-")}
        old["brain_mistakes"] = section["brain_mistakes"]
        old.pop("keywords", None)   # the keyword-table fallback reports before the classifier replaced it
    report["rescored"] = time.strftime("%Y-%m-%d %H:%M:%S")
    from assistant.brain_build.card import data_card, report_markdown

    _write(dest / "report.json", json.dumps(report, indent=1, default=str) + "\n")
    _write(dest / "report.md", report_markdown(report))
    _write(dest / "README.md", data_card(report))
    return report


def measure(requests: str | Path, install_dir: str | Path = ROUTER_DIR, base: bool = False) -> dict:
    """An installed router on requests written elsewhere (a JSON-lines file in outside.jsonl's format): each
    router's accuracy with 95% intervals, paired differences, and the brain's mistakes. Nothing is written."""
    from tools.registry import all_tools

    tools, dest = all_tools(), Path(install_dir)
    report = json.loads((dest / "report.json").read_text())
    cases = ev.outside_cases(requests)
    routers = {"regex": None, "adapter": Router(dest, report["config"]["model"], tools, report["data"]["labels"])}
    if base:
        routers["base"] = Router(None, report["config"]["model"], tools, report["data"]["labels"])
    section, _ = score_set(cases, route_all(routers, cases, tools), tools, LexicalRouter.load(dest))
    return {"requests": str(requests), "n": len(cases), "routers": section["routers"], "deltas": section["deltas"],
            "brain_mistakes": section["brain_mistakes"]}


def _refit_lexical(report: dict, dest: Path) -> dict:
    names = {f.name for f in fields(BuildConfig)}
    cfg = BuildConfig(**{k: v for k, v in report["config"].items() if k in names and v is not None},
                      install_dir=str(dest))
    b = Build(cfg)
    from tools.registry import all_tools

    b.tools, b.work = all_tools(), b._work_dir()
    data = b.generate()
    return b.install_lexical(b.fit_lexical(b.prepare(data)), data)["lexical"]


__all__ = ["Build", "BuildConfig", "BuildError", "RouteInput", "build", "rescore"]
