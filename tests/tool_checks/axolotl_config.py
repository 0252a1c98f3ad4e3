"""Check compiled Axolotl configs with Axolotl's own validator, on a CPU machine.

    python axolotl_config.py CONFIG.yaml...

Runs in the Axolotl environment (axolotl==0.21.0, Python 3.12). For each file it runs
`validate_config` with this machine's capabilities (what `axolotl train` does before
loading anything), and then checks what the validator cannot: Axolotl drops unknown keys
silently (a misspelled `sequence_length` passes and training uses the default
`sequence_len`), does not look inside dataset entries for unknown keys, and only resolves a
dataset `type` when it tokenizes. So every top-level key must be a field (or alias) of the
schema, every dataset key a field of `SFTDataset`, and every dataset type resolvable the
way Axolotl resolves it. Prints one JSON report per file; exit status 1 if any file fails.
Importing Axolotl takes about 15 s, so all files are checked in one process.
"""

import copy
import importlib
import importlib.util
import json
import os
import sys

os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import yaml
from axolotl.cli.config import gpu_capabilities
from axolotl.integrations.config import merge_input_args
from axolotl.utils.config import prepare_plugins, validate_config
from axolotl.utils.dict import DictDefault
from axolotl.utils.schemas.datasets import SFTDataset


def accepted(model):
    """Field names and aliases a pydantic model accepts."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias)
        elif alias is not None:
            for choice in getattr(alias, "choices", ()) or ():
                names.add(choice if isinstance(choice, str) else choice.path[0])
    return names


def type_resolves(kind):
    """Mirror of Axolotl's SFT dataset-type lookup (axolotl.utils.data.wrappers)."""
    if not isinstance(kind, str):
        return True
    from axolotl.utils.data.wrappers import DATASET_HANDLERS

    if kind == "messages" or kind.split(":")[0] in DATASET_HANDLERS:
        return True
    parts, function = kind.split("."), "load"
    if parts[-1] == "load" or parts[-1].startswith("load_"):
        parts, function = parts[:-1], parts[-1]
    module = ".".join(parts)
    for name in (f"axolotl.prompt_strategies.{module}", module):
        try:
            if importlib.util.find_spec(name):
                return hasattr(importlib.import_module(name), function)
        except (ImportError, ValueError):
            pass
    return False


def check(path, schema_keys, dataset_keys, capabilities):
    with open(path, encoding="utf-8") as handle:
        raw = yaml.safe_load(handle)
    report = {"file": path, "problems": []}
    unknown = sorted(set(raw) - schema_keys)
    if unknown:
        report["problems"].append(f"unknown keys (Axolotl would ignore them): {unknown}")
    for index, dataset in enumerate(raw.get("datasets") or []):
        extra = sorted(set(dataset) - dataset_keys)
        if extra:
            report["problems"].append(f"datasets[{index}]: unknown keys {extra}")
        if not type_resolves(dataset.get("type")):
            report["problems"].append(f"datasets[{index}]: unknown type {dataset.get('type')!r}")
    try:
        cfg = DictDefault(copy.deepcopy(raw))  # validate_config rewrites `datasets`
        prepare_plugins(cfg)
        validated = validate_config(
            cfg, capabilities=capabilities[0], env_capabilities=capabilities[1]
        )
    except Exception as error:  # pydantic.ValidationError, ValueError
        report["problems"].append(f"validate_config: {type(error).__name__}: {error}")
        return report
    changed = {
        key: [raw[key], validated.get(key)]
        for key in raw
        if key in validated and key != "datasets" and validated.get(key) != raw[key]
    }
    report["changed_by_validation"] = {
        k: v for k, v in changed.items() if not isinstance(v[0], dict)
    }
    return report


def main(paths):
    capabilities = gpu_capabilities()
    _, schema = merge_input_args()
    schema_keys, dataset_keys = accepted(schema), accepted(SFTDataset)
    reports = [check(path, schema_keys, dataset_keys, capabilities) for path in paths]
    for report in reports:
        print(json.dumps(report, default=str))
    return 1 if any(r["problems"] for r in reports) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
