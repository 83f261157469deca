"""A grid file as a W&B sweep (grid method), so that `wandb agent` on any number of machines works through it.

The sweep has one parameter, `grid_run`, whose values are the grid's deterministic run names. W&B's grid search
hands each name to one agent, which runs::

    /usr/bin/env stealbench grid <grid file> --grid_run=<name>

(the sweep's `command`, with W&B's `${env}`, `${program}` and `${args}` macros). That command runs exactly that run
of the grid, in-process; the run's `wandb.init` joins the sweep run the agent created (W&B passes its id in the
environment). The grid file path is the sweep's `program`, relative to the agent's working directory: start agents
from a checkout that holds the same file (or pass --program with an absolute path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .grid import Grid

#: the sweep parameter that selects a run of the grid
SWEEP_PARAMETER = "grid_run"
#: what the agent runs; W&B expands the macros (${args} -> --grid_run=<name>)
SWEEP_COMMAND = ["${env}", "stealbench", "grid", "${program}", "${args}"]


def sweep_definition(grid: Grid, program: str | None = None, metric: str = "surrogate/acc") -> dict[str, Any]:
    """The sweep configuration for `wandb sweep` / `wandb.sweep(...)`."""
    program = program or (str(grid.source) if grid.source else f"{grid.name}.yaml")
    return {
        "name": f"stealbench grid {grid.name}",
        "description": (grid.description or f"stealbench grid {grid.name}").strip()
        + f" ({len(grid.runs)} runs; each agent run is `stealbench grid {program} --{SWEEP_PARAMETER}=<name>`)",
        "program": program,
        "method": "grid",
        # informational for a grid sweep: W&B charts it; lower attacker accuracy = stronger defense
        "metric": {"name": metric, "goal": "minimize"},
        "parameters": {SWEEP_PARAMETER: {"values": [run.name for run in grid.runs]}},
        "command": list(SWEEP_COMMAND),
    }


def write_sweep(grid: Grid, path: str | Path, program: str | None = None) -> dict[str, Any]:
    definition = sweep_definition(grid, program)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# W&B sweep for the stealbench grid {grid.name!r} ({len(grid.runs)} runs), written by\n"
              f"#   stealbench grid {program or grid.source} --sweep\n"
              f"# Create it:       wandb sweep --project PROJECT {path}\n"
              f"# Then, on any number of machines (same checkout, same grid file):\n"
              f"#                  wandb agent ENTITY/PROJECT/SWEEP_ID\n")
    path.write_text(header + yaml.safe_dump(definition, sort_keys=False, width=120))
    return definition


def check_definition(definition: dict[str, Any]) -> list[str]:
    """Structural checks of a grid sweep definition (W&B validates fully when the sweep is created)."""
    problems = []
    if definition.get("method") != "grid":
        problems.append("method must be `grid`")
    params = definition.get("parameters")
    if not isinstance(params, dict) or not params:
        problems.append("parameters must be a non-empty mapping")
    else:
        for name, spec in params.items():
            if not isinstance(spec, dict) or not ({"values", "value"} & set(spec)):
                problems.append(f"grid parameter {name!r} needs `values` or `value`")
            elif "values" in spec and len(set(map(str, spec["values"]))) != len(spec["values"]):
                problems.append(f"grid parameter {name!r} has duplicate values")
    command = definition.get("command", [])
    if "${args}" not in command and "${args_no_hyphens}" not in command:
        problems.append("command passes no parameters (${args})")
    if "${program}" in command and not definition.get("program"):
        problems.append("command uses ${program} but no program is set")
    return problems


__all__ = ["SWEEP_COMMAND", "SWEEP_PARAMETER", "check_definition", "sweep_definition", "write_sweep"]
