"""Analysis of rlhf-sweeps runs. Never imports torch.

MLflow -> tidy DataFrame -> pure transforms -> figures, fits, verdicts, report:

- `load`        the one module that imports mlflow: runs + metric histories, parquet cache,
                report artifacts to the sweep's parent run
- `transforms`  d = sqrt(KL), re-centering, per-run peak/final/drop, group aggregation
- `fits`        Gao et al. best-of-n and RL functional forms, bootstrap over seeds
- `figures`     the five report figures (matplotlib, Agg)
- `verdicts`    claims C2-C7 of SCIENCE.md sec. 7 under explicit rules
- `report`      HTML report + CSV/markdown tables; `python -m analysis` is the CLI
- `theory`      claim C1 on an exact tabular bandit (`python -m analysis.theory`)
"""
