"""`honly-run`: plan (as `honly plan` does), refuse what cannot run here, then hand every
cell to the run loop and print the results table."""

from __future__ import annotations

import argparse
import sys

from honly_spec.cli.spec_commands import plan_and_show, plan_only
from honly_spec.report.display import table
from honly_spec.run.progress import make_display
from honly_spec.secrets import redact

EXIT_NOT_AVAILABLE = 3


def cmd_run(args: argparse.Namespace) -> int:
    if args.dry_run:
        return plan_only(args, args.force, args.only or None)
    from honly_spec.adapters.launch import StageFailed
    from honly_spec.adapters.ray_jobs import RayJobError
    from honly_spec.evals.judges import JudgeError
    from honly_spec.run import loop as run

    _, plans, store, profile = plan_and_show(args, args.force, args.only or None, quiet_json=True)
    display = make_display(args.display)
    store.on_wait = lambda name, holder: display.message(
        f"waiting for {name} (another run is building it): held by {holder}"
    )
    try:
        for graph, decisions in plans:
            run.check_runnable(graph, decisions, profile)
            run.check_selection(graph, decisions, store)
        resources = profile.get("resources") or {}
        runtime = run.Runtime(
            store=store,
            python=run.default_python(profile),
            tracking_uri=run.tracking_uri(plans[0][0].ctx.data, store),
            display=display,
            launcher=profile.get("launcher", "python"),
            profile=profile,
            processes=resources.get("processes_per_node") or resources.get("gpus_per_node") or 1,
        )
        tracker = run.Tracker(
            runtime.tracking_uri,
            run.experiment_name(plans[0][0].ctx.data),
            store.root / "mlartifacts",
        )
        results = {}
        for graph, decisions in plans:
            for node in graph.node_names():
                status = decisions[node].status
                kind = "eval" if node.startswith("eval[") else graph.stage(node).kind
                display.add(node, kind, status)
            results[graph.name] = run.CellRun(graph, decisions, runtime, tracker).run()
    except run.NotAvailable as error:
        print(redact(f"honly-run: {error}"), file=sys.stderr)
        return EXIT_NOT_AVAILABLE
    except (StageFailed, JudgeError, RayJobError, OSError) as error:
        # a tool that failed, a judge that could not answer, a cluster or file that is
        # not there: the run stops with what was finished kept, and says why
        print(redact(f"honly-run: {error}"), file=sys.stderr)
        return run.EXIT_FAILED
    finally:
        display.close()
    for cell, per_checkpoint in results.items():
        if not per_checkpoint:
            continue
        display.message(f"\nresults · {cell} (mean [95% interval] n)")
        display.message(table(["metric", *per_checkpoint], run.results_table(per_checkpoint)))
    display.message(f"\nMLflow: mlflow ui --backend-store-uri {runtime.tracking_uri}")
    return 0
