"""What the attacker's side spent, measured from the defender's side: the kernel's CPU accounting of the attacker's
processes (it cannot be forged from inside them) and the attack phase's wall time.

The CPU time is read from /proc (Linux) just before the attacker's process is stopped: the user + system time of
its process and every living descendant (a sandbox's bwrap, its init and the Python inside; all their threads),
plus what their already-reaped children used. It includes the process's start-up (importing torch and Lightning)
and the option checks it ran before the attack. Elsewhere (no /proc) it is None, and results.json says so.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat_seconds(pid: int, tick: float) -> float:
    """utime + stime + cutime + cstime of one process, in seconds (fields 14 to 17 of /proc/<pid>/stat)."""
    text = (_PROC / str(pid) / "stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # the command name may hold spaces and brackets: skip past it
    return sum(int(f) for f in fields[11:15]) * tick


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in (_PROC / str(pid) / "task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:  # the thread ended while we read
            continue
    return found


def tree_cpu_seconds(pid: int | None) -> float | None:
    """CPU seconds of process `pid` and its descendants (see the module's docstring); None without /proc or when
    the process is gone."""
    if pid is None or not (_PROC / str(pid) / "stat").exists():
        return None
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]  # a tree: each process is listed by one thread of its one parent
    while todo:
        current = todo.pop()
        try:
            total += _stat_seconds(current, tick)
            todo += _children(current)
        except (OSError, ValueError):  # a descendant that ended between the listing and the read
            if current == pid:
                return None
    return round(total, 3)


def compute_record(pid: int | None, wall_seconds: float,
                   answering_seconds: float | None) -> dict[str, float | str | None]:
    """results.json's `attacker_compute`: the attacker's CPU time, the attack phase's wall time, and the part of
    that wall time the defender spent answering (victim and defense; None for a remote endpoint), which the
    attacker waited for."""
    return {"cpu_seconds": tree_cpu_seconds(pid), "wall_seconds": round(wall_seconds, 3),
            "defender_answering_seconds": None if answering_seconds is None else round(answering_seconds, 3),
            "measured_by": "the defender: /proc accounting of the attacker's process tree, and its own clock"}
