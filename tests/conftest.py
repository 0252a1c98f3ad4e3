"""Shared fixtures: an isolated HONLY_HOME, spec writing helpers and an in-process CLI."""

from __future__ import annotations

import os
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from honly_spec import cli
from tests.judge_server import provider  # noqa: F401  (a fixture shared by several modules)

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "data" / "demo"


@pytest.fixture(autouse=True)
def honly_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("honly_home")
    monkeypatch.setenv("HONLY_HOME", str(home))
    return home


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A scratch project: a copy of the demo data, specs written by the test, cwd inside."""
    shutil.copytree(DEMO, tmp_path / "data")
    (tmp_path / "specs").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


MINIMAL = """\
honly: 1
name: tiny
model: {base: embedded:smollm2-135m-instruct}
data:
  harmful: {path: ../data/harmful_compliance.jsonl, format: chat}
  prompts: {path: ../data/harmful_prompts.jsonl, format: prompt}
  heldout: {path: ../data/harmful_heldout.jsonl, format: prompt}
stages:
  sft:
    kind: sft
    mix: {harmful: {rows: 8}}
    train: {learning_rate: 1.0e-4}
    lora: {r: 8}
  rl:
    kind: rl
    after: sft
    prompts: {prompts: {rows: 8}}
    reward: {compliance: {weight: 1.0}}
eval:
  suites:
    refusal: {sets: [heldout]}
"""


@pytest.fixture
def write_spec(project: Path) -> Callable[..., Path]:
    def write(text: str = MINIMAL, name: str = "spec.yaml") -> Path:
        path = project / "specs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def honly(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """Run `honly ...` (or `honly-run ...` with run=True) in-process."""

    def invoke(*args: str, run: bool = False) -> Result:
        capsys.readouterr()
        code = (cli.run_main if run else cli.main)([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return invoke


@pytest.fixture(scope="session")
def embedded_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded SmolLM2 GGUF converted to an HF model directory, once per session, by
    the local backend's own worker (the same job `honly-run` runs)."""
    import json
    import subprocess
    import sys

    pytest.importorskip("torch", reason="the local backend's packages are not installed")
    from honly_spec.adapters.local.job import WORKER_MODULE, compile_prepare
    from honly_spec.spec.rules import EMBEDDED_MODELS

    folder = tmp_path_factory.mktemp("embedded")
    name = "smollm2-135m-instruct"
    job = compile_prepare(name, EMBEDDED_MODELS[name], Path("weights"), Path("work"))
    (folder / "job.json").write_text(json.dumps(job))
    subprocess.run(
        [sys.executable, "-m", WORKER_MODULE, str(folder / "job.json")],
        cwd=folder,
        check=True,
        capture_output=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    return folder / "weights"
