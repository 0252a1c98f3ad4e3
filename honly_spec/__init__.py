"""honly: helpful-only fine-tuning studies from one YAML spec.

The spec core (this package minus `adapters/` runtimes) imports no torch, vLLM, Axolotl or
OpenRLHF: heavy tools run as subprocesses in their own environments.
"""

__version__ = "0.1.0"
