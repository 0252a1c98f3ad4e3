"""`honly compare`: eval metrics of many runs side by side, read back from MLflow.

Every `honly-run` of a spec (or matrix cell) is a parent run tagged `honly.cell`,
`honly.arm` (the cell without its seed) and `honly.seed`, with one child run per eval node
holding each metric's mean, `n` and 95% interval. A comparison takes the latest parent run
of each cell, groups cells into arms, and for every (arm, checkpoint) reports each metric:
with one seed, that run's mean and interval; with several, the mean over seeds with a
t-interval and n = the number of seeds.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from honly_spec.evals.metrics import arrow
from honly_spec.report.display import table

# two-sided 95% t quantiles by degrees of freedom (normal beyond the table)
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306,
       9: 2.262, 10: 2.228, 15: 2.131, 20: 2.086, 30: 2.042}  # fmt: skip
PARTS = ("n", "ci_low", "ci_high", "unscored")


@dataclass(frozen=True)
class Measured:
    """One metric of one checkpoint in one run."""

    arm: str
    cell: str
    seed: str
    checkpoint: str
    metric: str
    mean: float
    n: float | None
    ci_low: float | None
    ci_high: float | None
    run_id: str  # the cell's parent run
    eval_run_id: str  # the eval node's run (samples are its artifacts)
    started: int = 0  # when that eval ran (checkpoints are shown in the order they ran)


@dataclass(frozen=True)
class Summary:
    mean: float
    low: float
    high: float
    n: int
    seeds: int


def fetch(tracking_uri: str, experiments: list[str], name_filter: str | None = None) -> list:
    """Every metric of the latest evaluation of each (cell, checkpoint) in `experiments`
    (a later run that only re-trained a stage does not hide earlier evals)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    ids = []
    for name in experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            ids.append(experiment.experiment_id)
    if not ids:
        return []
    parents = {
        run.info.run_id: run
        for run in client.search_runs(ids, "tags.honly.cell != ''", max_results=50000)
        if "mlflow.parentRunId" not in run.data.tags
        and (not name_filter or name_filter in run.data.tags["honly.cell"])
    }
    evals = client.search_runs(ids, "tags.honly.kind = 'eval'", max_results=50000)
    latest: dict[tuple[str, str], tuple[Any, Any]] = {}  # (cell, checkpoint) → runs
    for child in sorted(evals, key=lambda r: r.info.start_time):
        if child.info.status != "FINISHED" or not child.data.metrics:
            continue  # a failed or interrupted eval does not hide an earlier result
        parent = parents.get(child.data.tags.get("mlflow.parentRunId", ""))
        if parent is not None:
            key = (parent.data.tags["honly.cell"], child.data.tags["honly.checkpoint"])
            latest[key] = (parent, child)
    found = []
    for (cell, checkpoint), (parent, child) in sorted(latest.items()):
        tags, metrics = parent.data.tags, child.data.metrics
        for name, mean in metrics.items():
            if name.rsplit("/", 1)[-1] in PARTS or name.startswith("judge/"):
                continue
            found.append(
                Measured(
                    arm=tags.get("honly.arm", cell),
                    cell=cell,
                    seed=tags.get("honly.seed", ""),
                    checkpoint=checkpoint,
                    metric=name,
                    mean=mean,
                    n=metrics.get(f"{name}/n"),
                    ci_low=metrics.get(f"{name}/ci_low"),
                    ci_high=metrics.get(f"{name}/ci_high"),
                    run_id=parent.info.run_id,
                    eval_run_id=child.info.run_id,
                    started=child.info.start_time,
                )
            )
    return found


def t95(df: int) -> float:
    eligible = [k for k in T95 if k <= df]
    return T95[max(eligible)] if eligible else T95[1]


def summarize_seeds(values: list[Measured]) -> Summary:
    if len(values) == 1:
        [one] = values
        low = one.ci_low if one.ci_low is not None else one.mean
        high = one.ci_high if one.ci_high is not None else one.mean
        return Summary(one.mean, low, high, int(one.n or 0), 1)
    means = [v.mean for v in values]
    k = len(means)
    mean = sum(means) / k
    sd = math.sqrt(sum((m - mean) ** 2 for m in means) / (k - 1))
    half = t95(k - 1) * sd / math.sqrt(k)
    return Summary(mean, mean - half, mean + half, k, k)


def comparison(found: list[Measured]) -> dict[str, Any]:
    """{columns: [(arm, checkpoint)], rows: {metric: {column: Summary}}}."""
    grouped: dict[tuple[str, str, str], list[Measured]] = {}
    for m in found:
        grouped.setdefault((m.metric, m.arm, m.checkpoint), []).append(m)
    first: dict[str, int] = {}
    for m in found:
        first[m.checkpoint] = min(first.get(m.checkpoint, m.started), m.started)
    columns = sorted(
        {(arm, ckpt) for _, arm, ckpt in grouped},
        key=lambda column: (column[0], column[1] != "base", first[column[1]], column[1]),
    )
    rows: dict[str, dict[tuple[str, str], Summary]] = {}
    for (metric, arm, ckpt), values in sorted(grouped.items()):
        rows.setdefault(metric, {})[(arm, ckpt)] = summarize_seeds(values)
    return {"columns": columns, "rows": rows}


def _cell_text(summary: Summary | None) -> str:
    if summary is None:
        return "-"
    digits = 0 if max(abs(summary.mean), abs(summary.high)) > 10 else 2
    count = f"seeds={summary.seeds}" if summary.seeds > 1 else f"n={summary.n}"
    return f"{summary.mean:.{digits}f} ±{(summary.high - summary.low) / 2:.{digits}f} {count}"


def render(result: dict[str, Any], fmt: str) -> str:
    columns = result["columns"]
    names = [f"{arm} · {ckpt}" for arm, ckpt in columns]
    rows = [
        [f"{metric} {arrow(metric)}".strip(), *(_cell_text(per.get(c)) for c in columns)]
        for metric, per in result["rows"].items()
    ]
    if fmt == "json":
        return json.dumps(
            [
                {"metric": metric, "arm": arm, "checkpoint": ckpt, **asdict(s)}
                for metric, per in result["rows"].items()
                for (arm, ckpt), s in per.items()
            ],
            indent=1,
        )
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["metric", "direction", "arm", "checkpoint", "mean", "low", "high",
                         "n", "seeds"])  # fmt: skip
        for metric, per in result["rows"].items():
            for (arm, ckpt), s in per.items():
                writer.writerow([metric, arrow(metric), arm, ckpt, s.mean, s.low, s.high,
                                 s.n, s.seeds])  # fmt: skip
        return out.getvalue()
    if fmt == "markdown":
        head = "| metric | " + " | ".join(names) + " |"
        rule = "|---" * (len(names) + 1) + "|"
        body = ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join([head, rule, *body])
    return table(["metric", *names], rows)
