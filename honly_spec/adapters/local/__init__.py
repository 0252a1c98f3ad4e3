"""The local backend: transformers/TRL/peft on CPU or one CUDA GPU.

`job.py` (imported by the core, pure) compiles a stage into a job file; `worker.py` runs it
in a subprocess of the backend's environment and is the only module here that imports
torch. Progress comes back as `@@honly {json}` lines on the worker's stdout.
"""
