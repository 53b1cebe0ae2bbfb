"""rlhf-sweeps: RLHF regularization experiments at scale.

Importing this package is cheap on purpose (no torch, mlflow, vllm or hydra):
`analysis/` imports `rlhf_sweeps.metrics` without pulling in torch.
"""

__version__ = "0.1.0"
