"""What a run prints: header, one line per round, the final metrics table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

console = Console(highlight=False)


def header(rows: dict[str, str]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows.items():
        grid.add_row(key, value)
    console.print(grid)


def round_line(point: dict[str, Any], budget: int) -> None:
    console.print(
        f"round {point['round']:>2}  queries {point['queries']:>6}/{budget:<6}  "
        f"surrogate acc {point['surrogate/acc']:.4f}  fidelity {point['surrogate/fidelity']:.4f}"
    )


def metrics_table(metrics: dict[str, Any], title: str) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def info(message: str) -> None:
    console.print(message)
