"""A quiet terminal by default: the run's own lines, not its libraries' chatter.

A 4-run sweep used to print thousands of lines: two vLLM INFO lines per
optimizer step (weight reload, prefix-cache reset), ~20 warnings at every
engine start (Triton, NUMA, libtcmalloc, "kernel already registered"), and
Hugging Face's loading reports and progress bars. `quiet()` turns those
libraries down to errors; the project's own messages, its progress bar and
every error still show. `verbose=true` (a top-level config key) leaves
everything as the libraries set it.

Some of these switches are environment variables read when a library is
first imported (vLLM's logger, torch's C++ warnings), so `quiet()` must run
before torch and vLLM are imported: `rlhf_sweeps.job` calls it first thing.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Python loggers of libraries that log INFO/WARNING lines about their own internals.
_LIBRARY_LOGGERS = ("vllm", "transformers", "torch", "mlflow", "alembic", "urllib3", "filelock",
                    "huggingface_hub", "datasets")


def quiet(verbose: bool) -> None:
    if verbose:
        return
    # read at import by vLLM (its own handler) and by torch's C++ logging (TORCH_WARN lines
    # such as NUMA binding and "kernel already registered"); a user's explicit value wins
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    os.environ.setdefault("TORCH_CPP_LOG_LEVEL", "ERROR")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # also transformers' loading bars
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # its load reports
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # "Creating initial MLflow database tables..."
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in _LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    # deprecation notices from inside libraries are for their authors, not for a user's run
    for category in (FutureWarning, DeprecationWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category, module=r"(vllm|torch|transformers|mlflow|sqlalchemy)")
    warnings.filterwarnings("ignore", message=r".*(noload|reduce_op).*")
    if "transformers" in sys.modules:  # imported earlier in this process: its env vars were read then
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
