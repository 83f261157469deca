"""The analysis side: finished runs read, compared and judged. Never imports Lightning; torch only in the utility sweep.

Layers, each importing only those above it:
  runs (results.json / W&B) → labels, describe → curves → rows → best_response (the attacker's best response)
    → tables, plots, tradeoff (security against cost) → tradeoff_plot, wandb_log → leaderboard (the command)
    → tradeoff_command (`stealbench tradeoff`)
  claims (claim model, parsing) → claims_spec (the YAML sections) → verdicts (inference) → records → report
  utility_sweep (a defense swept over each run's victim; imports torch, loaded lazily by report)
"""
