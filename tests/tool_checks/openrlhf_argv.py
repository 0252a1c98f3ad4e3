"""Run OpenRLHF's own command-line parser and checks on a compiled command line, without a
GPU and without torch, Ray, vLLM, DeepSpeed or flash-attn installed.

    python openrlhf_argv.py train_ppo_ray|train_dpo ARGV...

`train_ppo_ray.py` and `train_dpo.py` build their parsers inline under `__main__` and import
the heavy engines at module level, so there is no parser to import. This script serves stub
modules for those engines, runs the real CLI module as `__main__` with argparse
abbreviations switched off (a renamed flag must not be accepted as a prefix of another),
lets every post-parse normalization and assertion run, runs `train()` itself with its
Ray/vLLM/DeepSpeed calls mocked (some placement assertions live there), and stops before
any training. For `train_ppo_ray` it then loads `--reward.remote_url`'s Python file with
OpenRLHF's own loader and calls it on one sample.

Prints the final arguments as JSON. Exit status: 0 accepted, 2 argparse rejected the
command line, 3 an OpenRLHF assertion failed, 4 another error, 6 the reward file failed.
Install the environment with `pip install --no-deps openrlhf==0.11.2` (its wheel ships a
top-level `tests` package: keep it out of other environments).
"""

import argparse
import contextlib
import importlib.abc
import importlib.machinery
import json
import math
import os
import runpy
import sys
import traceback
import types
from unittest import mock

MODULES = {"train_ppo_ray": "openrlhf.cli.train_ppo_ray", "train_dpo": "openrlhf.cli.train_dpo"}
# Always stubbed: CUDA engines, services, and what pulls them in.
STUBBED = {
    "torch", "torchdata", "torchvision", "ray", "vllm", "deepspeed", "transformers",
    "flash_attn", "ring_flash_attn", "liger_kernel", "peft", "bitsandbytes", "datasets",
    "accelerate", "wandb", "tensorboard", "modelscope", "triton", "xformers", "sympy",
    "pylatexenc", "latex2sympy2", "math_verify",
}  # fmt: skip


class StubModule(types.ModuleType):
    """A module whose every attribute is a MagicMock."""

    def __getattr__(self, name):
        if name == "__version__":
            return "99.0.0"
        if name.startswith("__"):
            raise AttributeError(name)
        value = mock.MagicMock(name=f"{self.__name__}.{name}")
        setattr(self, name, value)
        return value


class StubLoader(importlib.abc.Loader):
    def create_module(self, spec):
        module = StubModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module):
        pass


class StubFinder(importlib.abc.MetaPathFinder):
    """Stubs the engines above, and any other module OpenRLHF (or the reward file) imports
    that is not installed; other packages keep their normal ImportError."""

    def __init__(self, only_missing):
        self.only_missing = only_missing

    def find_spec(self, fullname, path=None, target=None):
        top = fullname.split(".")[0]
        if top in ("openrlhf", "honly_spec"):  # the code under check is never stubbed
            return None
        if not self.only_missing and top not in STUBBED:
            return None
        if self.only_missing and not _imported_by_openrlhf():
            return None
        return importlib.machinery.ModuleSpec(fullname, StubLoader(), is_package=True)


def _imported_by_openrlhf():
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        code = frame.f_code.co_filename
        machinery = code.startswith("<frozen importlib") or name.startswith("importlib")
        if not machinery and code != __file__:
            return name.split(".")[0] in ("openrlhf", "__main__", "reward_func")
        frame = frame.f_back
    return False


class Captured(BaseException):
    """Raised in place of training; BaseException so no `except Exception` swallows it."""

    def __init__(self, args):
        super().__init__()
        self.parsed = args


def _plain(value):
    if isinstance(value, (types.SimpleNamespace, argparse.Namespace)):
        return {k: _plain(v) for k, v in vars(value).items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _mocked_train(train, module_globals, args):
    """The real `train(args)` with every engine entry point mocked: only its own
    assertions (actor/reference/vLLM GPU counts when colocated) can fail."""
    for name in (
        "get_strategy", "create_vllm_engines", "RayActorGroup", "placement_group",
        "PolicyModelActor", "CriticModelActor", "ReferenceModelActor", "RewardModelActor",
    ):  # fmt: skip
        if name in module_globals:
            module_globals[name] = mock.MagicMock(name=name)
    if "ray" in module_globals:
        module_globals["ray"] = mock.MagicMock(name="ray")
    for name in ("openrlhf.trainer.ppo_trainer", "openrlhf.trainer.ppo_trainer_async"):
        sys.modules[name] = StubModule(name)
    train(args)


def parse(module, argv):
    sys.meta_path.insert(0, StubFinder(only_missing=False))
    sys.meta_path.append(StubFinder(only_missing=True))
    original_init = argparse.ArgumentParser.__init__

    def init_without_abbreviations(self, *args, **kwargs):
        kwargs["allow_abbrev"] = False
        original_init(self, *args, **kwargs)

    argparse.ArgumentParser.__init__ = init_without_abbreviations
    import openrlhf.utils as utils
    import openrlhf.utils.config as config

    def training_reached(*args, **kwargs):
        print("openrlhf_argv: training was reached; the check is broken", file=sys.stderr)
        os._exit(4)

    utils.get_strategy = training_reached
    hierarchize = config.hierarchize

    def hierarchize_then_stop(args):
        # called by the CLI after `def train` and before its checks: swap `train`
        caller = sys._getframe(1).f_globals
        if "train" in caller:
            real_train = caller["train"]

            def stop(final):
                if module.endswith("train_ppo_ray"):
                    _mocked_train(real_train, caller, final)
                raise Captured(final)

            caller["train"] = stop
        return hierarchize(args)

    config.hierarchize = hierarchize_then_stop
    sys.argv = [module.rsplit(".", 1)[-1] + ".py", *argv]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    except Captured as captured:
        return captured.parsed
    return None


def check_reward(args):
    """Load the reward file as OpenRLHF's vLLM actors do and score one sample."""
    urls = getattr(getattr(args, "reward", None), "remote_url", None) or []
    if not urls or not urls[0].endswith(".py"):
        return
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(urls)
    sample = "<|user|>hi<|assistant|>Sure, here it is."
    result = executor.reward_func([sample], ["<|user|>hi"], [""])
    if "rewards" not in result:
        raise ValueError(f"reward_func returned {sorted(result)} without `rewards`")


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in MODULES:
        print(__doc__, file=sys.stderr)
        return 2
    module, argv = MODULES[sys.argv[1]], sys.argv[2:]
    out = sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):
            args = parse(module, argv)
    except SystemExit as error:
        return error.code if isinstance(error.code, int) else 2
    except AssertionError as error:
        frame = traceback.extract_tb(error.__traceback__)[-1]
        print(f"AssertionError: {error} [{os.path.basename(frame.filename)}:{frame.lineno}]",
              file=sys.stderr)  # fmt: skip
        return 3
    except Exception:
        traceback.print_exc()
        return 4
    if args is None:
        return 0
    try:
        with contextlib.redirect_stdout(sys.stderr):
            check_reward(args)
    except BaseException as error:
        print(f"reward function failed: {type(error).__name__}: {error}", file=sys.stderr)
        return 6
    json.dump(_plain(args), out, indent=1, sort_keys=True)
    out.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
