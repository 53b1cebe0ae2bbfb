"""Coefficient controllers: fixed, or adaptive to a KL target (Ziegler et al. 2019, docs/science.md §3).

The adaptive controller is fed the SEQUENCE-SUMMED KL (nats per response),
the quantity its `target` is stated in; feeding a per-token mean would make
the target silently length-dependent. Its value is checkpointed through
`state_dict` so a resumed run continues with the same coefficient.
"""

from __future__ import annotations


class AdaptiveKLController:
    """beta <- beta * (1 + e * n / horizon), e = clip(KL / target - 1, -0.2, 0.2)."""

    def __init__(self, init_coef: float, target: float, horizon: float) -> None:
        if not target > 0:
            raise ValueError(f"adaptive KL target must be > 0, got {target}")
        if not horizon > 0:
            raise ValueError(f"adaptive KL horizon must be > 0, got {horizon}")
        self.value = float(init_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        """current_kl: sequence-summed KL of the last batch; n_steps: samples (or steps) since the last update."""
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class CoefController:
    """The regularizer's coefficient (KL beta or entropy alpha), held constant; the adaptive
    controller's interface."""

    def __init__(self, coef: float) -> None:
        self.value = float(coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing: the coefficient is fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])
