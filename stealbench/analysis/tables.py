"""The leaderboard as text: terminal table (rich), Markdown and CSV."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .rows import Row

def table_columns(rows: list[Row]) -> list[str]:
    cols = ["data", "attack", "labels", "budget", "rank", "defense", "seeds", "attacker acc", "fidelity",
            "acc drop vs none", "query multiplier", "victim acc", "utility Δacc", "KL(y‖y')", "KL(y'‖y)", "L1",
            "top-1 changed"]
    if any(r.setting for r in rows):
        cols.insert(3, "setting")
    return cols


def table_cells(row: Row, with_setting: bool) -> list[str]:
    cells = [row.data, row.attack, row.label_mode, str(row.budget), str(row.rank), row.defense,
             str(len(row.runs)), row.metric("surrogate/acc").fmt(), row.metric("surrogate/fidelity").fmt(),
             "—" if row.baseline else (row.acc_drop.fmt(signed=True) if row.acc_drop.n else row.note or "n/a"),
             "— (baseline)" if row.baseline else row.multiplier.fmt(),
             row.metric("victim/acc").fmt(), row.utility_change.fmt(signed=True), row.metric("defense/kl_nats").fmt(),
             row.metric("defense/kl_nats_rev").fmt(), row.metric("defense/l1").fmt(),
             row.metric("defense/top1_changed").fmt()]
    if with_setting:
        cells.insert(3, row.setting or "-")
    return cells


def to_markdown(rows: list[Row]) -> str:
    cols = table_columns(rows)
    with_setting = "setting" in cols
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in table_cells(row, with_setting)) + " |")
    return "\n".join(lines) + "\n"


CSV_METRICS = (("surrogate/acc", "attacker_acc"), ("surrogate/fidelity", "fidelity"), ("victim/acc", "victim_acc"),
               ("victim/acc_defended", "victim_acc_defended"), ("defense/kl_nats", "kl_nats"),
               ("defense/kl_nats_rev", "kl_nats_rev"), ("defense/l1", "l1"),
               ("defense/top1_changed", "top1_changed"), ("queries", "queries"))


def write_csv(rows: list[Row], path: Path) -> None:
    header = ["data", "attack", "label_mode", "setting", "budget", "rank", "defense", "n_seeds", "seeds"]
    for _, name in CSV_METRICS:
        header += [f"{name}_mean", f"{name}_std"]
    header += ["acc_drop_mean", "acc_drop_std", "acc_drop_pairs", "query_multiplier_low", "query_multiplier_high",
               "query_multiplier_bound", "query_multiplier_per_seed", "note", "sources"]

    def num(x: float | None) -> str:
        return "" if x is None else f"{x:.6g}"

    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row in rows:
            line = [row.data, row.attack, row.label_mode, row.setting, row.budget, row.rank, row.defense,
                    len(row.runs), " ".join(map(str, row.seeds))]
            for key, _ in CSV_METRICS:
                s = row.metric(key)
                line += [num(s.mean), num(s.std)]
            low, high, bound = row.multiplier.summary() if not row.baseline else (1.0, 1.0, "=")
            per_seed = " ".join(f"s{s}:{lo:.4g}" if lo == hi else f"s{s}:[{lo:.4g},{hi:.4g}]"
                                for s, lo, hi in row.multiplier.per_seed)
            line += [num(0.0 if row.baseline else row.acc_drop.mean), num(row.acc_drop.std),
                     len(row.runs) if row.baseline else row.acc_drop.n, num(low), num(high), bound, per_seed,
                     row.note, " ".join(r.source for r in row.runs)]
            writer.writerow(line)


def print_table(rows: list[Row], problems: list[tuple[str, str]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # cells and folder names are plain Text: a `[/...]` in a path or label is not rich markup (and cannot crash)
    console = Console(highlight=False, width=None if os.isatty(1) else 320)
    cols = table_columns(rows)
    with_setting = "setting" in cols
    table = Table(title=title, title_justify="left")
    for col in cols:
        table.add_column(col, justify="right" if col in ("budget", "rank", "seeds") else "left")
    previous = None
    for row in rows:
        cell = (row.data, row.attack, row.label_mode, row.setting, row.budget)
        if previous is not None and cell != previous:
            table.add_section()
        previous = cell
        style = "bold" if row.rank == 1 and len(rows) > 1 else None
        table.add_row(*map(Text, table_cells(row, with_setting)), style=style)
    console.print(table)
    if problems:
        console.print(f"[yellow]skipped {len(problems)} run(s), not averaged in:[/]")
        for source, reason in problems:
            console.print(Text(f"  {source}: {reason}"))


def write_markdown(rows: list[Row], problems: list[tuple[str, str]], path: Path, sources: list[str],
                   plots: list[Path]) -> None:
    n_runs = sum(len(r.runs) for r in rows)
    parts = [f"# stealbench leaderboard\n",
             f"{n_runs} runs from {', '.join(sources)}; {len(rows)} rows (seeds aggregated: mean ± sample std).",
             "Ranked within each data / attack / label mode / budget by attacker accuracy (lower = stronger "
             "defense). Acc drop: undefended minus defended attacker accuracy at equal budget, paired by seed. "
             "Query multiplier: queries the attacker needs against the defense to reach the accuracy the "
             "undefended attack reached at this budget, over the queries it needed without the defense (first "
             "crossing on each seed's largest-budget curve; \"[lo, hi]\": the crossing lies between two checkpoints, "
             "not interpolated; geometric mean over seeds); \"> X\" means the defended curve never got there (X = "
             "its last checkpoint / budget, the design's ceiling). Utility Δacc: "
             "defended minus clean victim accuracy for benign users; KL in nats per query.\n",
             to_markdown(rows)]
    if plots:
        parts.append("\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    if problems:
        parts.append(f"\nSkipped {len(problems)} run(s), not averaged in:\n")
        parts += [f"- `{s}`: {reason}" for s, reason in problems]
        parts.append("")
    path.write_text("\n".join(parts))


__all__ = ["print_table", "table_cells", "table_columns", "to_markdown", "write_csv", "write_markdown"]
