"""Copy the scalars a GPU tool writes to TensorBoard into the stage's MLflow run.

OpenRLHF logs only to W&B or TensorBoard (`--logger.tensorboard_dir`), one sub-folder per
run; honly hands it a folder in the stage's build directory and, when the job ends (also
when it fails, so a crashed run still shows its curves), reads every event file there with
TensorBoard's own reader and logs each tag as a whole metric history.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

EVENT_GLOB = "events.out.tfevents.*"

Series = dict[str, list[tuple[int, float]]]


def read_scalars(folder: Path) -> Series:
    """Every scalar under `folder`: tag → [(step, value)] in step order. With several run
    folders (a restarted job), tags are prefixed by the run folder's relative path."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    runs = sorted({event.parent for event in Path(folder).rglob(EVENT_GLOB)})
    out: Series = {}
    for run in runs:
        accumulator = EventAccumulator(str(run), size_guidance={"scalars": 0})
        accumulator.Reload()
        prefix = "" if len(runs) == 1 else f"{run.relative_to(folder).as_posix()}/"
        for tag in accumulator.Tags()["scalars"]:
            points = {e.step: e.value for e in accumulator.Scalars(tag)}  # last write wins
            out[prefix + tag] = sorted(points.items())
    return out


def bridge(folder: Path, log_series: Callable[[str, list[tuple[int, float]]], None]) -> int:
    """Log every scalar series under `folder` with `log_series`; returns the point count."""
    if not Path(folder).is_dir():
        return 0
    series = read_scalars(folder)
    for tag, points in series.items():
        log_series(tag, points)
    return sum(len(points) for points in series.values())
