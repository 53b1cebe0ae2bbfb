"""Analysis of rlhf-sweeps runs. Never imports torch.

MLflow -> tidy DataFrame -> pure transforms -> figures, fits, verdicts, report:

- `load`        the one module that imports mlflow: runs + metric histories, parquet cache,
                report artifacts to the sweep's parent run
- `transforms`  d = sqrt(KL), re-centering, per-run peak/final, group aggregation
- `conditions`  exact conditions (every param but the seed), generated labels, control twins
- `fits`        Gao et al. best-of-n and RL functional forms, bootstrap over seeds
- `figures`     the six report figures (matplotlib, Agg)
- `verdicts`    claims C2-C7 (C2a, C2b) of docs/science.md §7 under noise-aware rules (§9)
- `calibrate`   false-positive rate and power of those rules on simulated curves
                (`python -m analysis.calibrate`)
- `report`      HTML report + CSV/markdown tables; `python -m analysis` is the CLI
- `theory`      claim C1 on an exact tabular bandit (`python -m analysis.theory`)
"""
