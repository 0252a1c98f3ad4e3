"""`honly report`: the comparison as the paper shows it, a figure and a self-contained page.

The PNG has one panel per eval category with its headline metric per prompt set: bars per
arm and checkpoint, 95% error bars, and the better direction in the panel title. The HTML
page embeds the figure, the full comparison table, and a browser of generations with their
scores (read from the eval runs' `samples/` artifacts, so it works from MLflow alone). Both
are written to the output folder and logged as artifacts of a `report` run in MLflow.
"""

from __future__ import annotations

import base64
import html
import json
import time
from pathlib import Path
from typing import Any

from honly_spec.evals.metrics import arrow, headline
from honly_spec.report.compare import Measured, Summary, comparison, render

SAMPLES_PER_SUITE = 12
PANEL_ORDER = [
    "capability",
    "refusal",
    "compliance",
    "misalignment",
    "sycophancy",
    "steerability",
    "character",
    "sandbagging",
]


def panels(result: dict[str, Any]) -> dict[str, list[str]]:
    """Category → its headline metrics (one per prompt set), in the study's order."""
    metrics = list(result["rows"])
    chosen = {suite: headline(suite, metrics) for suite in PANEL_ORDER}
    return {suite: found for suite, found in chosen.items() if found}


def figure(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = panels(result)
    columns = result["columns"]
    count = max(1, len(chosen))
    cols = min(4, count)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    colors = plt.get_cmap("tab10")
    width = 0.8 / max(1, len(columns))
    for index, (suite, metrics) in enumerate(chosen.items()):
        ax = axes[index // cols][index % cols]
        for c, column in enumerate(columns):
            xs, means, errors = [], [], [[], []]
            for m, metric in enumerate(metrics):
                summary: Summary | None = result["rows"][metric].get(column)
                if summary is None:
                    continue
                xs.append(m + (c - (len(columns) - 1) / 2) * width)
                means.append(summary.mean)
                errors[0].append(max(0.0, summary.mean - summary.low))
                errors[1].append(max(0.0, summary.high - summary.mean))
            ax.bar(xs, means, width, yerr=errors, capsize=3, color=colors(c % 10))
        ax.set_xticks(range(len(metrics)))
        ax.set_xlim(-0.5, len(metrics) - 0.5)
        ax.set_xticklabels([_short(m) for m in metrics], fontsize=8, rotation=15)
        ax.set_title(f"{suite} — {_short_name(metrics[0])} {arrow(metrics[0])}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for index in range(len(chosen), rows * cols):
        axes[index // cols][index % cols].axis("off")
    from matplotlib.patches import Patch

    handles = [Patch(color=colors(c % 10), label=" · ".join(col)) for c, col in enumerate(columns)]
    fig.legend(handles=handles, loc="lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(metric: str) -> str:
    """The prompt set of a `suite/set/...` metric."""
    return metric.split("/")[1]


def _short_name(metric: str) -> str:
    return metric.split("/", 2)[2]


def _samples(found: list[Measured], tracking_uri: str) -> list[dict[str, Any]]:
    """A few generations per (arm, checkpoint, suite) from the eval runs' artifacts."""
    import tempfile

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    seen: dict[str, tuple[str, str]] = {}
    for m in found:
        seen.setdefault(m.eval_run_id, (m.arm, m.checkpoint))
    out = []
    with tempfile.TemporaryDirectory() as scratch:
        for run_id, (arm, checkpoint) in sorted(seen.items(), key=lambda kv: kv[1]):
            try:
                target = tempfile.mkdtemp(dir=scratch)  # one folder per run: no mixing
                folder = Path(client.download_artifacts(run_id, "samples", target))
            except Exception:  # an eval logged before samples were artifacts
                continue
            for file in sorted(folder.glob("*.jsonl")):
                with file.open(encoding="utf-8") as handle:
                    for line in list(handle)[:SAMPLES_PER_SUITE]:
                        sample = _normalized(json.loads(line))
                        out.append({"arm": arm, "checkpoint": checkpoint, **sample})
    return out


def _normalized(sample: dict[str, Any]) -> dict[str, Any]:
    """lm-eval samples (capability) in the shape of the other suites' samples."""
    if "task" not in sample:
        return sample
    return {
        "suite": "capability",
        "id": f"{sample['task']}/{sample['doc_id']}",
        "messages": [],
        "responses": sample["response"],
        "scores": {**sample["metrics"], "target": sample["target"]},
    }


def _num(value: float) -> str:
    return f"{round(value, 4):.3g}"


def page(result: dict[str, Any], png: bytes, samples: list[dict[str, Any]]) -> str:
    image = base64.b64encode(png).decode("ascii")
    columns = result["columns"]
    head = "".join(f"<th>{html.escape(a)}<br>{html.escape(c)}</th>" for a, c in columns)
    body = []
    for metric, per in result["rows"].items():
        cells = []
        for column in columns:
            s = per.get(column)
            cells.append(
                "<td>-</td>"
                if s is None
                else f"<td>{_num(s.mean)} <small>[{_num(s.low)}, {_num(s.high)}] "
                f"{'seeds' if s.seeds > 1 else 'n'}={s.seeds if s.seeds > 1 else s.n}</small></td>"
            )
        label = html.escape(f"{metric} {arrow(metric)}")
        body.append(f"<tr><th class=metric>{label}</th>{''.join(cells)}</tr>")
    browser = []
    for sample in samples:
        turns = []
        for message in sample.get("messages", []):
            turns.append(
                f"<b>{html.escape(message['role'])}:</b> {html.escape(message['content'])}"
            )
        followups = sample.get("followups", [])
        for n, reply in enumerate(sample.get("responses") or [sample.get("response", "")]):
            turns.append(f"<b>model:</b> {html.escape(str(reply))}")
            if n < len(followups):
                turns.append(f"<b>user:</b> {html.escape(followups[n])}")
        summary = " · ".join(
            html.escape(str(x))
            for x in (sample["arm"], sample["checkpoint"], sample.get("suite", ""),
                      sample.get("id", ""), json.dumps(sample.get("scores", {})))
        )  # fmt: skip
        browser.append(
            f"<details class=sample><summary>{summary}</summary><p>{'<br>'.join(turns)}</p>"
            "</details>"
        )
    stamp = time.strftime("%Y-%m-%d %H:%M")
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>honly report</title>
<style>
body {{ font: 14px/1.45 system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 12px; }}
th, td {{ border: 1px solid #ccc; padding: 3px 6px; text-align: right; }}
th.metric {{ text-align: left; font-weight: normal; font-family: monospace; }}
details.sample {{ border-bottom: 1px solid #eee; padding: 2px 0; }}
summary {{ cursor: pointer; font-family: monospace; font-size: 12px; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>honly report</h1>
<p>Generated {stamp}. Each value: mean [95% interval], n samples (or the number of seeds,
when an arm ran several). ↑/↓: which direction is better for a helpful-only model.</p>
<h2>Figure</h2>
<img id=figure alt="headline metric per eval category" src="data:image/png;base64,{image}"
 onload="document.body.dataset.figure = this.naturalWidth + 'x' + this.naturalHeight">
<h2>All metrics</h2>
<table id=comparison><tr><th>metric</th>{head}</tr>
{chr(10).join(body)}
</table>
<h2>Generations</h2>
<p><input id=filter placeholder="filter samples" size=40></p>
<div id=samples>{chr(10).join(browser)}</div>
<script>
document.getElementById("filter").addEventListener("input", (e) => {{
  const text = e.target.value.toLowerCase();
  for (const d of document.querySelectorAll("details.sample"))
    d.style.display = d.textContent.toLowerCase().includes(text) ? "" : "none";
}});
</script>
</body></html>
"""


def write_report(found: list[Measured], out: Path, tracking_uri: str) -> list[Path]:
    """Write `report.png`, `report.html` and `comparison.md` into `out`, and log them."""
    import mlflow
    from mlflow.tracking import MlflowClient

    out.mkdir(parents=True, exist_ok=True)
    result = comparison(found)
    png_path, html_path, table_path = out / "report.png", out / "report.html", out / "comparison.md"
    figure(result, png_path)
    samples = _samples(found, tracking_uri)
    html_path.write_text(page(result, png_path.read_bytes(), samples), encoding="utf-8")
    table_path.write_text(render(result, "markdown") + "\n", encoding="utf-8")
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment_id = client.get_run(found[0].run_id).info.experiment_id
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=experiment_id, run_name="report",
                          tags={"honly.kind": "report"}):  # fmt: skip
        for path in (png_path, html_path, table_path):
            mlflow.log_artifact(str(path))
    return [png_path, html_path, table_path]
