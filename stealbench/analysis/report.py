"""REPORT.md of a reproduction: one row per claim (paper / measured / verdict), settings, figures, details."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..results import RESULTS_FILE
from . import stats
from .best_response import best_responses
from .claims import BudgetResult, ClaimResult, PartResult, Record
from .claims_spec import SweepSpec
from .plots import plot_curves, plot_kl, plot_utility
from .records import run_records, utility_records
from .rows import build_rows
from .runs import load_folders
from .tables import write_csv, write_markdown
from .verdicts import evaluate

VERDICT_MARK = {"reproduced": "✅ reproduced", "partly": "🟡 partly", "not reproduced": "❌ not reproduced",
                "inconclusive": "❔ inconclusive", "not testable": "⛔ not testable", "not checked": "⚪ not checked"}
RULE = ("Each claim is decided by its one primary setting, fixed in the file before the runs; other settings are "
        "secondary (details) and never decide. Per budget: the estimate with its 95% interval over seeds "
        f"({stats.METHOD}), runs paired by seed; multipliers as geometric means, a crossing between two checkpoints "
        "as the bracket it lies in. One-sided tests, Holm-adjusted over the budgets a part spans; equivalence by "
        "TOST with the margin fixed in the file. Reproduced: the interval lies inside what the claim asserts; not "
        "reproduced: outside; inconclusive: it straddles; not testable: the design cannot reach the claimed value "
        "(a multiplier's ceiling); partly: some parts reproduced and some not.")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def claim_records(runs: list, utility: SweepSpec | None) -> tuple[list[Record], list, list[tuple[str, str]],
                                                                   list[dict]]:
    """(records, leaderboard rows, problems, utility rows) from finished runs: what the claims are checked on.

    The utility sweep reloads each seed's victim from its run folder, so it needs folder runs (not W&B ones).
    """
    from .utility_sweep import sweep_victim, victims_of

    records, problems = run_records(runs) if runs else ([], [])
    rows = build_rows(runs)[0] if runs else []
    best_responses(rows)  # the leaderboard's best-response columns, as `stealbench leaderboard` writes them
    utility_raw: list[dict] = []
    folders = [Path(r.source) for r in runs if Path(r.source).is_dir()]
    if utility is not None and folders:
        per_data: dict[str, list] = {}  # one record per data set: victims of different tasks never pool
        for seed, payload in victims_of(folders):
            sweep = sweep_victim(payload, utility)
            data = payload["identity"]["data"]
            per_data.setdefault(data, []).append((seed, sweep))
            utility_raw += [{"data": data, "seed": seed, **row} for row in sweep]
        for data, per_victim in per_data.items():
            records += utility_records(per_victim, utility.defense, data, list(utility.params), len(per_data) > 1)
    elif utility is not None and runs:
        problems.append(("utility", "the utility sweep reloads victims from run folders; W&B runs have none"))
    return records, rows, problems, utility_raw


def build_records(rep) -> tuple[list[Record], list, list[tuple[str, str]], list[dict]]:
    """claim_records over the finished runs of a reproduction."""
    runs, problems = load_folders([rep.runs_dir]) if rep.runs_dir.exists() else ([], [])
    records, rows, more, utility_raw = claim_records(runs, rep.utility)
    return records, rows, problems + more, utility_raw


def write_report(rep, *, invocation_seconds: float, grid_report=None, command: str = "") -> Path:
    out = rep.output_dir
    out.mkdir(parents=True, exist_ok=True)
    records, rows, problems, utility_raw = build_records(rep)
    results = evaluate(rep.claims, records)
    figures: list[Path] = []
    if rows:
        lb = out / "leaderboard"
        lb.mkdir(exist_ok=True)
        figures += plot_curves(rows, out) + plot_utility(rows, out)
        write_markdown(rows, problems, lb / "leaderboard.md", [str(rep.runs_dir)], [])
        write_csv(rows, lb / "leaderboard.csv")
    if utility_raw:
        (out / "utility_sweep.json").write_text(json.dumps(utility_raw, indent=1))
        figures.append(plot_kl(utility_raw, rep, out / "utility_sweep.png"))
    text = render(rep, results, records, figures, problems, invocation_seconds, grid_report, command)
    path = out / "REPORT.md"
    path.write_text(text)
    return path


def check_claims(runs: list, spec, out_dir: Path, sources: list[str]) -> list[ClaimResult]:
    """`leaderboard --claims`: check a claims file against runs, print one line per claim, write claims.md."""
    records, _, problems, _ = claim_records(runs, spec.utility)
    results = evaluate(spec.claims, records)
    title = spec.paper.get("title") or (spec.source.stem if spec.source else "claims")
    lines = [f"# Claims: {title}", "", f"Claims file `{spec.source}`, checked against {len(runs)} runs in "
             f"{', '.join(sources)}.", "", fixed_line(spec.fixed), "", RULE, ""] + claims_table(results) \
        + claim_details(results)
    if problems:
        lines += ["## Skipped", ""] + [f"- `{s}`: {why}" for s, why in problems] + [""]
    (out_dir / "claims.md").write_text("\n".join(lines))
    print_claims(results, title)
    return results


def print_claims(results: list[ClaimResult], title: str) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console(highlight=False, width=None if os.isatty(1) else 200)
    # the title is the claims file's `paper: title`: user text, printed as written (not rich markup)
    table = Table(title=Text(f"claims: {title}"), title_justify="left", show_lines=True)
    for col in ("#", "claim", "primary setting", "estimate [95% interval] (n)", "verdict"):
        table.add_column(col)
    for i, res in enumerate(results, start=1):
        settings = "\n".join(_primary_text(p) for p in res.parts)
        measured = "\n".join(_estimate_text(p) for p in res.parts)
        verdict = f"{res.verdict}: {res.why}"
        if res.best_response_verdict:
            verdict += f"\nagainst the best response: {res.best_response_verdict}: {res.best_response_why}"
        table.add_row(str(i), Text(res.claim.text), Text(settings), Text(measured), Text(verdict))
    console.print(table)


def render(rep, results: list[ClaimResult], records: list[Record], figures: list[Path], problems, seconds: float,
           grid_report, command: str) -> str:
    paper = rep.paper
    lines = [f"# Reproduction: {paper.get('title', rep.name)}", ""]
    if paper.get("authors") or paper.get("reference"):
        lines += [f"{paper.get('authors', '')} — {paper.get('reference', '')}".strip(" —"), ""]
    complete = [r for r in rep.grid.runs if (rep.runs_dir / r.name / RESULTS_FILE).exists()]
    run_seconds = _run_seconds(rep)
    lines += [f"Command: `{command}` (reproduction file `{rep.source}`, {len(rep.grid.runs)} runs, "
              f"{len(complete)} complete).", ""]
    if grid_report is not None:
        timing = (f"Wall time: this invocation {seconds:.0f} s ({len(grid_report.completed)} runs run now, "
                  f"{len(grid_report.skipped)} already complete, {len(grid_report.failed)} failed)")
    else:
        timing = "Report rebuilt from finished runs (`--report_only`: no run in this invocation)"
    timing += f"; the runs' own wall times sum to {run_seconds:.0f} s."
    lines += [timing, "", fixed_line(rep.spec.fixed), "", RULE, ""]
    if paper.get("scale"):
        lines += ["Scale: " + " ".join(str(paper["scale"]).split()), ""]
    lines += claims_table(results)
    if figures:
        lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    lines += claim_details(results)
    if problems:
        lines += ["## Skipped runs", ""] + [f"- `{s}`: {why}" for s, why in problems] + [""]
    return "\n".join(lines)


def fixed_line(fixed: dict[str, str] | None) -> str:
    if not fixed:
        return "Claims: when they were fixed is not recorded (no `fixed:` in the file)."
    line = f"Claims fixed on {fixed['date']} at commit {fixed['commit']}, before the runs they are judged on."
    if fixed.get("amended"):
        line += f" Amended: {fixed['amended']}"
    return line


def _primary_text(p: PartResult) -> str:
    sel = ", ".join(f"{k}={v}" for k, v in p.part.primary.items())
    return (f"{p.part.label}: " if p.part.label else "") + sel


def _interval_text(b: BudgetResult) -> str:
    v = b.value
    digits = 2 if v.unit else 3
    return f"{v.fmt()} {b.interval.fmt(digits, v.unit)} (n={v.n})"


def _estimate_text(p: PartResult) -> str:
    if p.deciding is None:
        return f"no data ({p.why})"
    b = p.deciding
    where = f" @ {b.record.get('budget')}" if b.record.get("budget") is not None else ""
    return f"{p.part.metric}{where}: {_interval_text(b)}"


def _test_text(p: PartResult) -> str:
    part = p.part
    if part.test == "equivalent":
        test = f"TOST, margin ±{part.margin:g} around {part.value:g}"
    else:
        test = f"one-sided t, {'≥' if part.test == 'at_least' else '≤'} {part.value:g}"
    if len(p.budgets) > 1:
        test += f", {'every' if part.budgets == 'every' else 'max over'} {len(p.budgets)} budgets, Holm"
    return test


def claims_table(results: list[ClaimResult]) -> list[str]:
    """Markdown: one row per claim part (primary setting, estimate with its 95% interval and n, test, verdict)."""
    best = any(r.best_response_verdict for r in results)
    lines = ["| # | claim | the paper | primary setting | stealbench measured [95% interval] (n seeds) | test | "
             "verdict |" + (" against the attacker's best response |" if best else ""),
             "|---|---|---|---|---|---|---|" + ("---|" if best else "")]
    for i, res in enumerate(results, start=1):
        settings = "<br>".join(_cell(_primary_text(p)) for p in res.parts)
        measured = "<br>".join(_cell(_estimate_text(p)) for p in res.parts)
        tests = "<br>".join(_cell(_test_text(p)) for p in res.parts)
        verdict = f"**{VERDICT_MARK[res.verdict]}** — {res.why}"
        row = (f"| {i} | {_cell(res.claim.text)} | {_cell(res.claim.paper)} | {settings} | {measured} | "
               f"{tests} | {_cell(verdict)} |")
        if best:
            row += f" {_cell(_best_response_text(res))} |"
        lines.append(row)
    lines.append("")
    notes = [(i, r.claim.note) for i, r in enumerate(results, start=1) if r.claim.note]
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {' '.join(note.split())}" for i, note in notes] + [""]
    return lines


def _best_response_text(res: ClaimResult) -> str:
    """The claim against the attacker's best response: its setting, estimate and verdict per part, or why none."""
    if res.best_response_verdict is None:
        return "no best response named (not a claim about the attacker, or none run)"
    parts = [f"{_best_setting(p)}: {_estimate_text(p)}" for p in res.best_response]
    return f"**{VERDICT_MARK[res.best_response_verdict]}** — " + "; ".join(parts)


def _best_setting(p: PartResult) -> str:
    return (f"{p.part.label} " if p.part.label else "") + ", ".join(
        f"{k}={v}" for k, v in p.part.primary.items() if k in ("label_mode", "attack"))


def _budget_rows(results: list[BudgetResult]) -> list[str]:
    lines = ["| setting | estimate [95% interval] (n) | p holds | p fails | verdict | context |",
             "|---|---|---|---|---|---|"]
    for b in results:
        context = "; ".join(t for t in (b.record.context, b.record.details, b.why) if t)
        lines.append(f"| {_cell(b.record.label)} | {_cell(_interval_text(b))} | {b.p_holds:.3g} | {b.p_fails:.3g} | "
                     f"{b.verdict} | {_cell(context)} |")
    return lines + [""]


def claim_details(results: list[ClaimResult]) -> list[str]:
    """Markdown: per claim part, the primary setting's records (which decide) and the secondary ones (which do
    not), each with its interval, p-values and verdict."""
    lines = ["## Details per claim", "",
             "Per part: every record of the primary setting (one per budget; p-values Holm-adjusted over them), "
             "then the secondary settings (unadjusted, reported only). Runs paired by seed; budgets are the "
             "checkpoints of each seed's largest-budget curve.", ""]
    for i, res in enumerate(results, start=1):
        lines += [f"### {i}. {res.claim.text} ({res.claim.id}) — {res.verdict}", ""]
        for p in res.parts:
            part = p.part
            lines += [f"Part {part.label or part.metric}: `{part.metric}` {part.goal()} at primary "
                      f"`{part.primary}` from {part.source} records: **{p.verdict}** ({p.why})", ""]
            if p.budgets:
                lines += ["Primary (decides):", ""] + _budget_rows(p.budgets)
            if p.secondary:
                lines += [f"Secondary `{part.secondary}` (never decides):", ""] + _budget_rows(p.secondary)
        for p in res.best_response:
            part = p.part
            lines += [f"Against the attacker's best response, part {part.label or part.metric}: `{part.metric}` "
                      f"{part.goal()} at `{part.primary}`: **{p.verdict}** ({p.why})", ""]
            if p.budgets:
                lines += _budget_rows(p.budgets)
    return lines


def _run_seconds(rep) -> float:
    total = 0.0
    for run in rep.grid.runs:
        try:
            total += float(json.loads((rep.runs_dir / run.name / RESULTS_FILE).read_text()).get("wall_seconds", 0))
        except (OSError, ValueError, TypeError):
            continue
    return total


__all__ = ["build_records", "check_claims", "claim_records", "render", "write_report"]
