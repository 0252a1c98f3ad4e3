"""Submit OpenRLHF runs to a Ray cluster through the Ray Jobs REST API.

OpenRLHF's `train_ppo_ray` places its actors, reference model and vLLM engines with Ray.
honly does not schedule anything itself: it submits the compiled command line as a Ray job
to the cluster named in the profile (`ray.address`, the dashboard's `http://host:8265`), or
to a head it starts on 127.0.0.1. The API is plain HTTP, so honly's core needs no Ray
install: `POST /api/jobs/` submits, `GET /api/jobs/<id>` reports the status,
`GET /api/jobs/<id>/logs` returns the output, `POST /api/jobs/<id>/stop` stops it.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

FINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})


class RayJobError(RuntimeError):
    """The cluster could not be reached or refused the request."""


class RayJobs:
    def __init__(self, address: str, timeout_s: float = 30.0):
        if address.startswith("ray://"):
            raise RayJobError(
                f"`{address}` is a Ray client address; jobs are submitted to the dashboard's "
                "HTTP address, e.g. http://host:8265"
            )
        self.base = address.rstrip("/")
        self.timeout_s = timeout_s

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.base + path,
            data=None if body is None else json.dumps(body).encode("utf-8"),
            headers={"content-type": "application/json"},
            method=method,
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                return json.loads(response.read().decode("utf-8") or "null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", "replace")[:500]
            raise RayJobError(
                f"Ray jobs API {method} {path}: HTTP {error.code}: {detail}"
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise RayJobError(f"cannot reach the Ray dashboard at {self.base}: {error}") from None

    def submit(
        self,
        command: list[str],
        submission_id: str,
        env: dict[str, str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> str:
        body = {
            "entrypoint": shlex.join(command),
            "submission_id": submission_id,
            "runtime_env": {"env_vars": env or {}},
            "metadata": metadata or {},
        }
        return self._call("POST", "/api/jobs/", body)["submission_id"]

    def status(self, submission_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{submission_id}")

    def logs(self, submission_id: str) -> str:
        return self._call("GET", f"/api/jobs/{submission_id}/logs")["logs"]

    def stop(self, submission_id: str) -> None:
        self._call("POST", f"/api/jobs/{submission_id}/stop")

    def wait(
        self,
        submission_id: str,
        on_output: Callable[[str], None] | None = None,
        poll_s: float = 1.0,
        timeout_s: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends; new log text goes to `on_output` as it appears. On
        timeout (or Ctrl-C) the job is stopped, so no GPU is left busy."""
        started, seen = time.monotonic(), 0
        try:
            while True:
                status = self.status(submission_id)
                if on_output is not None:
                    text = self.logs(submission_id)
                    if len(text) > seen:
                        on_output(text[seen:])
                        seen = len(text)
                if status["status"] in FINAL:
                    return status
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    raise TimeoutError(f"Ray job {submission_id} still running after {timeout_s}s")
                time.sleep(poll_s)
        except (KeyboardInterrupt, TimeoutError, RayJobError):
            # leave no GPU busy; the cluster may be what failed, so try only once
            with contextlib.suppress(RayJobError):
                self.stop(submission_id)
            raise


def start_local_head(ray: str, dashboard_port: int = 8265, port: int = 6379) -> str:
    """Start a Ray head on 127.0.0.1 with `ray` (the RL environment's `ray` executable) and
    return its dashboard address; `ray stop` ends it."""
    command = [
        ray,
        "start",
        "--head",
        f"--port={port}",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard_port}",
        "--include-dashboard=true",
        "--disable-usage-stats",
    ]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RayJobError(f"`ray start --head` failed: {(done.stdout + done.stderr)[-800:]}")
    address = f"http://127.0.0.1:{dashboard_port}"
    client = RayJobs(address, timeout_s=5)
    for _ in range(60):  # the dashboard answers a few seconds after the head is up
        try:
            client._call("GET", "/api/jobs/")
            return address
        except RayJobError:
            time.sleep(1)
    subprocess.run([ray, "stop"], capture_output=True)  # do not leave a head behind
    raise RayJobError(f"the Ray dashboard did not come up at {address}")
