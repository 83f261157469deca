"""The analysis side: finished runs read, compared and judged. Never imports Lightning; torch only in the utility sweep.

Layers, each importing only those above it:
  runs (results.json / W&B) → labels, describe → curves → rows → tables, plots, wandb_log → leaderboard (the command)
  claims (claim model, parsing) → claims_spec (the YAML sections) → verdicts (inference) → records → report
  utility_sweep (a defense swept over each run's victim; imports torch, loaded lazily by report)
"""
