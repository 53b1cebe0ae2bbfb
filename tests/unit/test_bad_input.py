"""Every numeric key has a range rule (or is free on purpose), and every rule names its key (issue 17).

The bad inputs themselves, each through `launch.py` as a user would give them,
are in tests/e2e/test_bad_input_runs.py.
"""

from __future__ import annotations

import math

import pytest
from omegaconf import OmegaConf

from rlhf_sweeps.config import FREE, RANGES, Config, ConfigError, numeric_keys, validate

TRACEBACK = "Traceback (most recent call last)"


# ------------------------------------------------------------------------ the schema's ranges
def test_every_numeric_key_has_a_range_rule_or_is_free_on_purpose():
    missing = [k for k in numeric_keys() if k not in RANGES and k not in FREE]
    assert not missing, f"numeric keys without a range rule (add one to RANGES, or to FREE with a reason): {missing}"
    assert all(len(why) > 20 for why in FREE.values())
    assert not set(RANGES) - set(numeric_keys()), "rules for keys the schema does not have"


def _bad_value(cfg, key: str):
    rule = RANGES[key]
    lo = OmegaConf.select(cfg, rule.lo) if isinstance(rule.lo, str) else rule.lo
    hi = OmegaConf.select(cfg, rule.hi) if isinstance(rule.hi, str) else rule.hi
    if lo is not None:
        return lo if rule.lo_open else lo - 1
    return hi if rule.hi_open else hi + 1


@pytest.mark.parametrize("key", sorted(RANGES))
def test_every_range_rule_rejects_a_value_outside_it_naming_the_key(key):
    from rlhf_sweeps.config import ArchConfig

    cfg = OmegaConf.structured(Config)
    cfg.model.proxy_rm_arch = ArchConfig()  # Optional sections: set, so that their keys are checked
    cfg.model.gold_rm_arch = ArchConfig()
    validate(cfg)  # the defaults pass
    default = OmegaConf.select(cfg, key)
    OmegaConf.update(cfg, key, _bad_value(cfg, key))
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    line = next(line for line in str(err.value).splitlines() if line.strip().startswith(f"{key}="))
    assert "must be" in line and "(e.g. " in line, line
    if isinstance(default, float):
        OmegaConf.update(cfg, key, math.nan)
        with pytest.raises(ConfigError, match=f"{key}=nan: must be a finite number"):
            validate(cfg)
