"""The leaderboard logged to W&B: wandb.Tables and the figures, in a run of job type `leaderboard`.

Tables: `leaderboard` (every attacker variant's row, with its cell's `best_response_*` columns, as in
leaderboard.csv), `best_response` (defenses ranked by their worst case) and, when a defense knob is swept,
`tradeoff` (the points behind the security-against-cost plot) and `equal_cost`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .best_response import BestResponse
from .rows import Row
from .tables import BEST_CSV_COLUMNS, best_cells, best_columns, best_values, table_cells, table_columns

Tables = dict[str, tuple[list[str], list[list[Any]]]]


def leaderboard_tables(rows: list[Row], bests: list[BestResponse]) -> Tables:
    cols = table_columns(rows)
    with_setting = "setting" in cols
    data = [table_cells(r, with_setting) + best_values(r.best) for r in rows]
    tables: Tables = {"leaderboard": (cols + list(BEST_CSV_COLUMNS), data)}
    if bests:
        bcols = best_columns(bests)
        tables["best_response"] = (bcols, [best_cells(b, "setting" in bcols) for b in bests])
    return tables


def log_to_wandb(tables: Tables, project_path: str | None, plots: list[Path], name: str = "leaderboard") -> str:
    import wandb

    entity, _, project = (project_path or "stealbench").rpartition("/")
    run = wandb.init(project=project or "stealbench", entity=entity or None, job_type="leaderboard",
                     name=name, reinit="finish_previous")
    payload: dict[str, Any] = {key: wandb.Table(columns=cols, data=data) for key, (cols, data) in tables.items()}
    for p in plots:
        payload[f"plots/{p.stem}"] = wandb.Image(str(p))
    run.log(payload)
    where = run.url or run.dir
    run.finish()
    return str(where)


__all__ = ["Tables", "leaderboard_tables", "log_to_wandb"]
