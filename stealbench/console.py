"""What a run prints: header, one line per round, the final metrics table.

Only stealbench's own message templates are rich markup. Everything interpolated into them (names, paths,
plugin keys and texts, error messages) goes through `escape`, and table cells are `Text`: `--name '[red]x'`
must print as typed, `[/]` must not raise MarkupError. Lines an attack sends are printed as plain text behind
`attack: `, so that they cannot pass for the framework's own round lines.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console
from rich.markup import escape as _escape_markup
from rich.table import Table
from rich.text import Text

console = Console(highlight=False)

ATTACK_PREFIX = "attack: "
#: control characters (ANSI escapes, carriage returns, backspaces) could redraw or erase earlier lines
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def escape(value: Any) -> str:
    """`value` as text that rich prints literally, whatever brackets it holds."""
    return _escape_markup(str(value))


def plain(value: Any) -> str:
    """Control characters shown as `\\xNN` instead of acting on the terminal."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", str(value))


def header(rows: dict[str, str]) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for key, value in rows.items():
        grid.add_row(Text(key), Text(plain(value)))  # values hold names, paths and plugin parameters
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
        # keys and values may come from a defense's report() (plugin code)
        table.add_row(Text(plain(key)), Text(plain(f"{value:.4f}" if isinstance(value, float) else value)))
    console.print(table)


def info(message: str) -> None:
    """A framework message: rich markup; interpolate outside values with `escape`."""
    console.print(message)


def attack_line(text: str) -> None:
    """A line the attack asked to print (its log messages): plain text, every line behind `attack: `."""
    for line in str(text).splitlines() or [""]:
        console.print(Text(ATTACK_PREFIX + plain(line), style="dim"))
