"""The leaderboard as text: terminal tables (rich), Markdown and CSV. Two tables: defenses ranked by their worst
case (the best response over attacker variants, stealbench.analysis.best_response), and every variant's row."""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .best_response import BestResponse
from .rows import Row

def table_columns(rows: list[Row]) -> list[str]:
    cols = ["data", "attack", "labels", "budget", "rank", "defense", "seeds", "attacker acc", "fidelity",
            "acc drop vs none", "query multiplier", "victim acc", "utility Δacc", "cost ratio", "KL(y‖y')",
            "KL(y'‖y)", "L1", "top-1 changed"]
    if any(r.setting for r in rows):
        cols.insert(3, "setting")
    return cols


def table_cells(row: Row, with_setting: bool) -> list[str]:
    cells = [row.data, row.attack, row.label_mode, str(row.budget), str(row.rank), row.defense,
             str(len(row.runs)), row.metric("surrogate/acc").fmt(), row.metric("surrogate/fidelity").fmt(),
             "—" if row.baseline else (row.acc_drop.fmt(signed=True) if row.acc_drop.n else row.note or "n/a"),
             "— (baseline)" if row.baseline else row.multiplier.fmt(),
             row.metric("victim/acc").fmt(), row.utility_change.fmt(signed=True),
             row.price("defense/cost_ratio").fmt(digits=2), row.metric("defense/kl_nats").fmt(),
             row.metric("defense/kl_nats_rev").fmt(), row.metric("defense/l1").fmt(),
             row.metric("defense/top1_changed").fmt()]
    if with_setting:
        cells.insert(3, row.setting or "-")
    return cells


def best_columns(bests: list[BestResponse]) -> list[str]:
    cols = ["data", "attack", "budget", "rank", "defense", "seeds", "best response acc", "best response",
            "fidelity", "acc drop vs none", "query multiplier", "soft acc", "soft acc drop", "variants (mean acc)"]
    if any(b.setting for b in bests):
        cols.insert(2, "setting")
    return cols


def best_cells(best: BestResponse, with_setting: bool) -> list[str]:
    soft = best.non_adaptive
    cells = [best.data, best.attack, str(best.budget), str(best.rank), best.defense, str(best.acc.n),
             best.acc.fmt(), best.winner_label, best.fidelity.fmt(),
             "—" if best.baseline else (best.acc_drop.fmt(signed=True) if best.acc_drop.n else best.note or "n/a"),
             "— (baseline)" if best.baseline else best.multiplier.fmt(),
             soft.metric("surrogate/acc").fmt() if soft else "not run",
             "—" if best.baseline or soft is None else (soft.acc_drop.fmt(signed=True) if soft.acc_drop.n else
                                                         soft.note or "n/a"),
             best.variant_means()]
    if with_setting:
        cells.insert(2, best.setting or "-")
    return cells


def several_variants(bests: list[BestResponse]) -> bool:
    """Whether any cell ran more than one attacker variant (else the best response is the one variant's row)."""
    return any(len(b.variants) > 1 for b in bests)


def _markdown_table(cols: list[str], lines_of_cells: list[list[str]]) -> str:
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for cells in lines_of_cells:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_markdown(rows: list[Row]) -> str:
    cols = table_columns(rows)
    return _markdown_table(cols, [table_cells(row, "setting" in cols) for row in rows])


def best_to_markdown(bests: list[BestResponse]) -> str:
    cols = best_columns(bests)
    return _markdown_table(cols, [best_cells(b, "setting" in cols) for b in bests])


CSV_METRICS = (("surrogate/acc", "attacker_acc"), ("surrogate/fidelity", "fidelity"), ("victim/acc", "victim_acc"),
               ("victim/acc_defended", "victim_acc_defended"), ("defense/kl_nats", "kl_nats"),
               ("defense/kl_nats_rev", "kl_nats_rev"), ("defense/l1", "l1"),
               ("defense/top1_changed", "top1_changed"), ("queries", "queries"))
#: results.json `price` figures, in the CSV after CSV_METRICS (empty where no run recorded them)
CSV_PRICE = (("defense/cost_ratio", "cost_ratio"), ("defense/state_size", "state_size"))


def write_csv(rows: list[Row], path: Path) -> None:
    header = ["data", "attack", "label_mode", "setting", "budget", "rank", "defense", "n_seeds", "seeds"]
    for _, name in CSV_METRICS + CSV_PRICE:
        header += [f"{name}_mean", f"{name}_std"]
    header += ["acc_drop_mean", "acc_drop_std", "acc_drop_pairs", "query_multiplier_low", "query_multiplier_high",
               "query_multiplier_bound", "query_multiplier_per_seed", "note"]
    header += list(BEST_CSV_COLUMNS) + ["sources"]

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
            for key, _ in CSV_PRICE:
                s = row.price(key)
                line += [num(s.mean), num(s.std)]
            low, high, bound = row.multiplier.summary() if not row.baseline else (1.0, 1.0, "=")
            per_seed = " ".join(f"s{s}:{lo:.4g}" if lo == hi else f"s{s}:[{lo:.4g},{hi:.4g}]"
                                for s, lo, hi in row.multiplier.per_seed)
            line += [num(0.0 if row.baseline else row.acc_drop.mean), num(row.acc_drop.std),
                     len(row.runs) if row.baseline else row.acc_drop.n, num(low), num(high), bound, per_seed,
                     row.note]
            line += [_csv_text(v) for v in best_values(row.best)] + [" ".join(r.source for r in row.runs)]
            writer.writerow(line)


#: the best response of a row's cell, on every row of that cell (so a `soft` row has it beside its own numbers)
BEST_CSV_COLUMNS = ("best_response_acc", "best_response_acc_std", "best_response_mode", "best_response_attack",
                    "best_response_fidelity", "best_response_n_seeds", "best_response_seeds",
                    "best_response_acc_drop", "best_response_acc_drop_std", "best_response_acc_drop_pairs",
                    "best_response_query_multiplier_low", "best_response_query_multiplier_high",
                    "best_response_query_multiplier_bound", "best_response_rank", "best_response_variants",
                    "best_response_note")


def best_values(best: BestResponse | None) -> list:
    """The BEST_CSV_COLUMNS values, numbers as numbers (None when missing, or when the rows were built without
    best responses)."""
    if best is None:
        return [None] * len(BEST_CSV_COLUMNS)
    # the bracket [low, high] (geometric means over seeds), as the leaderboard's own multiplier columns
    low, high, bound = best.multiplier.summary() if not best.baseline else (1.0, 1.0, "=")
    return [best.acc.mean, best.acc.std, best.mode, best.attack_variant, best.fidelity.mean, best.acc.n,
            " ".join(map(str, best.winner.seeds)), 0.0 if best.baseline else best.acc_drop.mean, best.acc_drop.std,
            best.acc.n if best.baseline else best.acc_drop.n, low, high, bound, best.rank, best.variant_means(),
            best.note]


def _csv_text(value) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def print_table(rows: list[Row], problems: list[tuple[str, str]], title: str,
                bests: list[BestResponse] | None = None) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    # cells and folder names are plain Text: a `[/...]` in a path or label is not rich markup (and cannot crash)
    console = Console(highlight=False, width=None if os.isatty(1) else 320)
    if bests and several_variants(bests):
        cols = best_columns(bests)
        table = Table(title=f"{title}: defenses ranked by their worst case (the attacker's best response)",
                      title_justify="left")
        for col in cols:
            table.add_column(col, justify="right" if col in ("budget", "rank", "seeds") else "left")
        previous = None
        for best in bests:
            cell = (best.data, best.attack, best.setting, best.budget)
            if previous is not None and cell != previous:
                table.add_section()
            previous = cell
            table.add_row(*map(Text, best_cells(best, "setting" in cols)),
                          style="bold" if best.rank == 1 and len(bests) > 1 else None)
        console.print(table)
        title = f"{title}: every attacker variant"
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
                   plots: list[Path], bests: list[BestResponse] | None = None, extra: str = "") -> None:
    n_runs = sum(len(r.runs) for r in rows)
    parts = ["# stealbench leaderboard\n",
             f"{n_runs} runs from {', '.join(sources)}; {len(rows)} rows (seeds aggregated: mean ± sample std).",
             "Ranked within each data / attack / label mode / budget by attacker accuracy (lower = stronger "
             "defense). Acc drop: undefended minus defended attacker accuracy at equal budget, paired by seed. "
             "Query multiplier: queries the attacker needs against the defense to reach the accuracy the "
             "undefended attack reached at this budget, over the queries it needed without the defense (first "
             "crossing on each seed's largest-budget curve; \"[lo, hi]\": the crossing lies between two checkpoints, "
             "not interpolated; geometric mean over seeds); \"> X\" means the defended curve never got there (X = "
             "its last checkpoint / budget, the design's ceiling). Utility Δacc: "
             "defended minus clean victim accuracy for benign users. Cost ratio: the defense's serving time over "
             "the victim's forward pass, summed over every batch the oracle answered in the same run (n/a: not "
             "recorded). KL in nats per query.\n",
             to_markdown(rows)]
    if bests and several_variants(bests):
        parts[2:2] = [
            "\n## Defenses ranked by their worst case\n",
            "Best response: per data / attack / budget / defense, the attacker variant (label mode with its "
            "options, attack parameters) with the highest mean attacker accuracy over its seeds; its per-seed "
            "values are reported (choosing per seed would pick each seed's luckiest variant). Acc drop and query "
            "multiplier: against the undefended attacker's best response, chosen the same way, paired by seed. "
            "Soft: the non-adaptive attacker, beside it. Ranked by best-response accuracy (lower = stronger "
            "defense).\n", best_to_markdown(bests), "\n## Every attacker variant\n"]
    if extra:
        parts.append("\n" + extra)
    if plots:
        parts.append("\n" + "\n".join(f"![{p.stem}]({p.name})" for p in plots) + "\n")
    if problems:
        parts.append(f"\nSkipped {len(problems)} run(s), not averaged in:\n")
        parts += [f"- `{s}`: {reason}" for s, reason in problems]
        parts.append("")
    path.write_text("\n".join(parts))


__all__ = ["BEST_CSV_COLUMNS", "best_cells", "best_columns", "best_values", "best_to_markdown", "print_table",
           "several_variants", "table_cells", "table_columns", "to_markdown", "write_csv", "write_markdown"]
