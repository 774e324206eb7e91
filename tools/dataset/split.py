"""`split_dataset`: a seeded train/eval split, stratified by label, with near-duplicates kept on one side."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

from pydantic import BaseModel, Field

from runtime.errors import BadInput
from tools.dataset.analysis import Analysis, analyze
from tools.dataset.checks import Thresholds
from tools.dataset.audit import COLUMNS_FIELD
from tools.registry import ToolInput, tool


class SplitDatasetInput(ToolInput):
    path: str = Field(description="the data file to split (never modified)")
    eval_fraction: float = Field(0.1, gt=0.0, lt=0.9, description="share of rows for eval")
    eval_rows: int | None = Field(None, ge=1, description="exact eval size; overrides eval_fraction")
    seed: int = Field(0, description="same seed, same split")
    stratify: bool = Field(True, description="keep label shares equal on both sides when answers form a label set")
    out_dir: str | None = Field(None, description="folder for <name>.train.jsonl and <name>.eval.jsonl; default "
                                "beside the input")
    thresholds: Thresholds = Field(default_factory=Thresholds, description="near_duplicate sets which rows are "
                                   "grouped (kept on the same side)")
    overwrite: bool = Field(False, description="replace existing train/eval files (needs approval)")
    columns: dict[str, str] | None = COLUMNS_FIELD


class SplitDatasetOutput(BaseModel):
    train_path: str
    eval_path: str
    train_rows: int
    eval_rows: int
    skipped_rows: list[int] = Field(description="unreadable rows (invalid JSON, schema) that neither side got")
    stratified: bool
    labels: dict[str, dict[str, int]] | None = Field(None, description="label -> {train, eval} counts")
    duplicate_groups: int = Field(description="groups of exact/near duplicates, each kept on one side")
    seed: int


@tool("split_dataset", "Split a data set into train and eval: seeded, stratified by label, duplicates kept together.",
      cost="cpu_job")
def split_dataset(args: SplitDatasetInput) -> SplitDatasetOutput:
    from runtime import dataio
    from runtime.outputs import OutputSet, check_distinct, check_output, json_line
    from runtime.paths import resolve_path

    path = resolve_path(args.path, must_exist=True)
    out_dir = resolve_path(args.out_dir) if args.out_dir else path.parent
    stem = Path(path.name.removesuffix(".gz")).stem
    outs = [check_output(out_dir / f"{stem}.{side}.jsonl", inputs=[path], overwrite=args.overwrite)
            for side in ("train", "eval")]
    check_distinct(outs)
    th = args.thresholds
    # group a little more loosely than the contamination check looks, so that auditing the two halves against each
    # other finds no overlap: near-duplicates 0.1 below its similarity, and rows sharing a contamination n-gram
    group_th = th.model_copy(update={"near_duplicate": max(0.3, min(th.near_duplicate,
                                                                    th.contamination_similarity) - 0.1)})
    a = analyze(path, thresholds=group_th, check_tokens=False, columns=args.columns)
    skipped = set(a.findings["invalid_json"].rows) | set(a.findings["schema"].rows)
    usable = [r for r in range(a.rows) if r not in skipped]
    if len(usable) < 2:
        raise BadInput(f"{path.name} has {len(usable)} usable row(s); a split needs at least 2")
    groups = _groups(a, usable, th.contamination_ngram)
    target_total = args.eval_rows if args.eval_rows else max(1, round(args.eval_fraction * len(usable)))
    if target_total >= len(usable):
        raise BadInput(f"eval_rows={target_total} leaves nothing to train on ({len(usable)} usable rows)")
    label_of = {g: int(a.label_of[g]) for g in groups}
    stratified = args.stratify and bool(a.labels) and all(v >= 0 for v in label_of.values())
    eval_set = _choose_eval(groups, label_of if stratified else {g: -1 for g in groups}, target_total,
                            random.Random(args.seed))
    n = Counter()
    counts: dict[str, Counter] = defaultdict(Counter)
    with OutputSet(overwrite=args.overwrite) as files:
        handles = {"train": files.open(outs[0]), "eval": files.open(outs[1])}
        for row, rec in dataio.iter_records(path):  # the person's own layout, unconverted
            if row in skipped or not isinstance(rec, dict):
                continue
            side = "eval" if row in eval_set else "train"
            handles[side].write(json_line(rec))
            n[side] += 1
            if a.labels and a.label_of[row] >= 0:
                counts[a.labels[a.label_of[row]]][side] += 1
    return SplitDatasetOutput(
        train_path=str(outs[0]), eval_path=str(outs[1]), train_rows=n["train"], eval_rows=n["eval"],
        skipped_rows=sorted(skipped), stratified=stratified,
        labels={k: {"train": v["train"], "eval": v["eval"]} for k, v in counts.items()} if counts else None,
        duplicate_groups=sum(1 for m in groups.values() if len(m) > 1), seed=args.seed)


def _groups(a: Analysis, usable: list[int], ngram: int) -> dict[int, list[int]]:
    """Rows that must stay on one side (copies, near-copies, rows sharing an n-gram), keyed by their first row."""
    from runtime import neardup

    links = [*a.dup_of.items(), *neardup.repeated_ngrams(*a.words, ngram)]
    return neardup.clusters(links, items=usable)


def _choose_eval(groups: dict[int, list[int]], label_of: dict[int, int], total: int, rng: random.Random) -> set[int]:
    """Whole groups for eval, in seeded order, up to each label's share of `total` (largest remainder, so the
    shares add up to `total`)."""
    per_label: Counter = Counter()
    for g, members in groups.items():
        per_label[label_of[g]] += len(members)
    rows = sum(per_label.values())
    quota = {lab: total * k / rows for lab, k in per_label.items()}
    targets = {lab: int(q) for lab, q in quota.items()}
    for lab in sorted(quota, key=lambda x: (targets[x] - quota[x], x))[:total - sum(targets.values())]:
        targets[lab] += 1
    order = sorted(groups)
    rng.shuffle(order)
    taken: Counter = Counter()
    eval_set: set[int] = set()
    for g in order:
        lab, size = label_of[g], len(groups[g])
        if taken[lab] + size <= targets[lab]:
            eval_set.update(groups[g])
            taken[lab] += size
    if not eval_set:  # every group larger than the target: take the smallest one
        eval_set.update(groups[min(order, key=lambda x: len(groups[x]))])
    return eval_set
