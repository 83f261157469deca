"""The leaderboard logged to W&B: a wandb.Table and the figures, in a run of job type `leaderboard`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .rows import Row
from .tables import table_cells, table_columns

def log_to_wandb(rows: list[Row], project_path: str | None, plots: list[Path]) -> str:
    import wandb

    entity, _, project = (project_path or "stealbench").rpartition("/")
    cols = table_columns(rows)
    with_setting = "setting" in cols
    run = wandb.init(project=project or "stealbench", entity=entity or None, job_type="leaderboard",
                     name="leaderboard", reinit="finish_previous")
    table = wandb.Table(columns=cols, data=[table_cells(r, with_setting) for r in rows])
    payload: dict[str, Any] = {"leaderboard": table}
    for p in plots:
        payload[f"plots/{p.stem}"] = wandb.Image(str(p))
    run.log(payload)
    where = run.url or run.dir
    run.finish()
    return str(where)


__all__ = ["log_to_wandb"]
