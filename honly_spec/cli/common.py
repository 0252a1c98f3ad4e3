"""What several commands share: the runtime profile, the store it names, matrix-cell and
node selection, and the GPU-stage compiler a profile implies."""

from __future__ import annotations

from pathlib import Path

from honly_spec.plan.graph import Graph
from honly_spec.plan.write import NativeCompiler
from honly_spec.spec.check import check_profile
from honly_spec.spec.errors import Diagnostic, Pos, SpecError
from honly_spec.spec.suggest import did_you_mean
from honly_spec.store.store import Store, default_home


def load_profile(profile_file: str | None) -> dict:
    """The runtime profile (validated), with `store` made absolute; {} for the default."""
    if profile_file is None:
        return {}
    profile = check_profile(profile_file)
    base = Path(profile_file).parent
    if "store" in profile:
        profile["store"] = str((base / Path(profile["store"]).expanduser()).resolve())
    for env in (profile.get("envs") or {}).values():  # interpreters: relative to the profile
        if "python" in env and "/" in env["python"]:
            env["python"] = str((base / Path(env["python"]).expanduser()).absolute())
    return profile


def store_for(profile: dict) -> Store:
    return Store(Path(profile["store"]) if "store" in profile else default_home() / "store")


def selected_cells(graphs: list[Graph], wanted: list[str]) -> list[Graph]:
    """The cells `--cell` names (by full name or by the part after the spec name)."""
    if not wanted:
        return graphs
    names = {g.name: g for g in graphs}
    for g in graphs:
        if g.ctx.spec.cell is not None:
            names.setdefault(g.ctx.spec.cell.folder, g)
    unknown = [w for w in wanted if w not in names]
    if unknown:
        cells = [g.ctx.spec.cell.folder for g in graphs if g.ctx.spec.cell is not None]
        raise SpecError(
            [
                Diagnostic(
                    Pos(f"--cell {w}"),
                    (),
                    f"no such matrix cell{did_you_mean(w, cells)} (cells: {', '.join(cells)})"
                    if cells
                    else "this spec has no `matrix`",
                )
                for w in unknown
            ]
        )
    chosen = {names[w].name for w in wanted}
    return [g for g in graphs if g.name in chosen]


def native_compiler(profile: dict, store: Store) -> NativeCompiler | None:
    """Compiles GPU stages into native jobs when the profile has GPUs (their batch and
    placement depend on the GPU count); None on a CPU profile."""
    if not (profile.get("resources") or {}).get("gpus_per_node"):
        return None
    from honly_spec.adapters.compile import native_jobs
    from honly_spec.adapters.native import Resources

    resources = Resources.from_profile(profile)
    return lambda graph: native_jobs(graph, store.root, resources)


def check_node_names(graph: Graph, option: str, names: list[str]) -> None:
    known = graph.node_names()
    problems = [
        Diagnostic(
            Pos(f"--{option} {n}"),
            (),
            f"no stage or eval named `{n}`{did_you_mean(n, known)} (nodes: {', '.join(known)})",
        )
        for n in names
        if n not in known
    ]
    if problems:
        raise SpecError(problems)
