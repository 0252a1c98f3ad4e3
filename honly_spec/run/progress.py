"""What a run shows while it works: a live stage table with progress bars for people
(`--display rich`, the default on a terminal), one line per event for logs (`plain`), or
JSON lines for machines (`json`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

PLAIN_EVERY_S = 10.0


class Display:
    """Base display: records node states; subclasses render them."""

    def __init__(self) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}

    def add(self, node: str, kind: str, status: str) -> None:
        self.nodes[node] = {
            "kind": kind,
            "status": status,
            "start": None,
            "elapsed": None,
            "step": 0,
            "total": None,
            "note": "",
        }

    def started(self, node: str) -> None:
        self.nodes[node].update(status="running", start=time.monotonic())

    def progress(self, node: str, step: int, total: int | None, note: str = "") -> None:
        self.nodes[node].update(step=step, total=total, note=note)

    def finished(self, node: str, status: str, note: str = "") -> None:
        state = self.nodes[node]
        elapsed = time.monotonic() - state["start"] if state["start"] else 0.0
        state.update(status=status, elapsed=elapsed, note=note)

    def message(self, text: str) -> None:
        print(text, flush=True)

    def close(self) -> None:
        pass


class PlainDisplay(Display):
    def __init__(self) -> None:
        super().__init__()
        self.last: dict[str, float] = {}

    def started(self, node: str) -> None:
        super().started(node)
        print(f"[{node}] running", flush=True)

    def progress(self, node: str, step: int, total: int | None, note: str = "") -> None:
        super().progress(node, step, total, note)
        now = time.monotonic()
        if now - self.last.get(node, 0.0) >= PLAIN_EVERY_S or (total and step >= total):
            self.last[node] = now
            print(f"[{node}] {step}/{total or '?'} {note}".rstrip(), flush=True)

    def finished(self, node: str, status: str, note: str = "") -> None:
        super().finished(node, status, note)
        elapsed = self.nodes[node]["elapsed"]
        print(f"[{node}] {status} in {elapsed:.1f}s {note}".rstrip(), flush=True)


class JsonDisplay(Display):
    def _emit(self, **fields: Any) -> None:
        print(json.dumps({"time": round(time.time(), 3), **fields}), flush=True)

    def add(self, node: str, kind: str, status: str) -> None:
        super().add(node, kind, status)
        self._emit(event="planned", node=node, kind=kind, status=status)

    def started(self, node: str) -> None:
        super().started(node)
        self._emit(event="started", node=node)

    def progress(self, node: str, step: int, total: int | None, note: str = "") -> None:
        super().progress(node, step, total, note)
        self._emit(event="progress", node=node, step=step, total=total, note=note)

    def finished(self, node: str, status: str, note: str = "") -> None:
        super().finished(node, status, note)
        self._emit(
            event="finished",
            node=node,
            status=status,
            seconds=round(self.nodes[node]["elapsed"], 3),
            note=note,
        )

    def message(self, text: str) -> None:
        self._emit(event="message", text=text)


class RichDisplay(Display):
    """A live table: node, kind, status (cached?), progress bar, elapsed."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self.console = Console()
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.live.start()

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        table = Table(box=None, padding=(0, 1))
        for column in ("node", "kind", "status", "progress", "elapsed", ""):
            table.add_column(column)
        for node, state in self.nodes.items():
            total = state["total"] or 0
            bar = ProgressBar(total=total or 1, completed=state["step"] if total else 0, width=24)
            if state["status"] in ("HIT", "done", "cached"):
                bar = ProgressBar(total=1, completed=1, width=24)
            running = state["status"] == "running" and state["start"]
            elapsed = time.monotonic() - state["start"] if running else state["elapsed"]
            table.add_row(
                Text(node),
                state["kind"],
                state["status"],
                bar,
                f"{elapsed:.1f}s" if elapsed is not None else "",
                Text(state["note"]),
            )
        return table

    def _refresh(self) -> None:
        self.live.update(self._render())

    def add(self, node: str, kind: str, status: str) -> None:
        super().add(node, kind, status)
        self._refresh()

    def started(self, node: str) -> None:
        super().started(node)
        self._refresh()

    def progress(self, node: str, step: int, total: int | None, note: str = "") -> None:
        super().progress(node, step, total, note)
        self._refresh()

    def finished(self, node: str, status: str, note: str = "") -> None:
        super().finished(node, status, note)
        self._refresh()

    def message(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def close(self) -> None:
        self._refresh()
        self.live.stop()


def make_display(kind: str) -> Display:
    if kind == "rich" or (kind == "auto" and sys.stdout.isatty()):
        return RichDisplay()
    return JsonDisplay() if kind == "json" else PlainDisplay()
