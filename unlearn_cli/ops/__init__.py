"""The core of each command, one module per command (mirroring `cli/`).

Each takes typed arguments, checks everything it can before any work, and
returns the JSON document the command prints with `--json`:
`train.train_run`, `forget.forget_run`, `prune.prune_run`,
`covariance.compute_covariance`, `evaluate.evaluate`,
`storage_report.storage_report`, `verify.verify_run`.
"""
