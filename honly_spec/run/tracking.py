"""MLflow as the sink for every run: a parent run per spec (or matrix cell), a nested child
run per stage and eval, selected flattened params, tags that tie runs to stage keys and the
exact code, eval metrics with n and intervals, and the resolved spec, plan and eval samples
as artifacts. The store stays the source of truth; MLflow is where people look.

MLflow is imported only here, and only when a run starts: `validate` and `plan` never pay
for it.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from honly_spec import __version__
from honly_spec.spec.paths import flatten, format_path

MAX_PARAM_CHARS = 500
UNSAFE_NAME = re.compile(r"[^\w.\- :/]")


def safe_name(name: str) -> str:
    """MLflow names allow letters, digits, `_ - . space : /` (no commas or brackets)."""
    return UNSAFE_NAME.sub("_", name)[:250]


def flat_params(config: dict[str, Any]) -> dict[str, str]:
    """Flattened `a.b.c → value` params, values cut to a length every MLflow store accepts."""
    out = {}
    for path, value in flatten(config).items():
        text = str(value)
        if len(text) > MAX_PARAM_CHARS:
            text = text[: MAX_PARAM_CHARS - 1] + "…"
        out[safe_name(format_path(path))] = text
    return out


def _git(folder: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_state(folder: Path) -> dict[str, str]:
    """Commit and dirty flag of the repository holding `folder`, if any."""
    try:
        commit = _git(folder, "rev-parse", "HEAD")
        dirty = _git(folder, "status", "--porcelain")
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"honly.git_commit": commit, "honly.git_dirty": str(bool(dirty)).lower()}


class Tracker:
    """Thin wrapper over MLflow's fluent API for honly's run layout."""

    def __init__(self, uri: str, experiment: str, artifact_root: Path):
        import mlflow

        self.mlflow = mlflow
        mlflow.set_tracking_uri(uri)
        name = safe_name(experiment)
        found = mlflow.get_experiment_by_name(name)
        if found is None:
            artifact_root.mkdir(parents=True, exist_ok=True)
            experiment_id = mlflow.create_experiment(name, artifact_location=artifact_root.as_uri())
        else:
            experiment_id = found.experiment_id
        self.experiment_id = experiment_id

    @contextlib.contextmanager
    def run(
        self,
        name: str,
        tags: dict[str, str],
        params: dict[str, str] | None = None,
        nested: bool = False,
    ) -> Iterator[str]:
        """A run that ends FINISHED, or FAILED when the body raises."""
        active = self.mlflow.start_run(
            experiment_id=self.experiment_id,
            run_name=safe_name(name),
            nested=nested,
            tags={"honly.version": __version__, **tags},
        )
        try:
            if params:
                items = list(params.items())
                for start in range(0, len(items), 100):
                    self.mlflow.log_params(dict(items[start : start + 100]))
            yield active.info.run_id
        except BaseException:
            self.mlflow.end_run(status="FAILED")
            raise
        self.mlflow.end_run(status="FINISHED")

    def metrics(self, values: dict[str, float], step: int | None = None) -> None:
        clean = {safe_name(k): float(v) for k, v in values.items()}
        items = list(clean.items())
        for start in range(0, len(items), 900):
            self.mlflow.log_metrics(dict(items[start : start + 900]), step=step)

    def series(self, name: str, points: list[tuple[int, float]]) -> None:
        """A whole metric history (e.g. the training loss per step) in batched requests."""
        from mlflow.entities import Metric

        run_id = self.mlflow.active_run().info.run_id
        stamp = int(time.time() * 1000)
        metrics = [Metric(safe_name(name), float(v), stamp, int(s)) for s, v in points]
        client = self.mlflow.tracking.MlflowClient()
        for start in range(0, len(metrics), 900):
            client.log_batch(run_id, metrics=metrics[start : start + 900])

    def tags(self, values: dict[str, str]) -> None:
        self.mlflow.set_tags(values)

    def text(self, content: str, name: str) -> None:
        self.mlflow.log_text(content, name)

    def artifact(self, path: Path, folder: str | None = None) -> None:
        self.mlflow.log_artifact(str(path), artifact_path=folder)
