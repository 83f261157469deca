"""Hand-made results.json folders with any label mode, label options and defense cost (tests of the best response
and of the security-against-cost trade-off)."""

from __future__ import annotations

import json
from pathlib import Path

from test_leaderboard import write_run


def fake_run(root: Path, *, defense: str = "none", mode: str = "soft", seed: int = 0, acc: float = 0.5,
             curve: list[tuple[int, float]] | None = None, budget: int = 400, params: dict | None = None,
             label_options: dict | None = None, benign_drop: float = 0.0, l1: float = 0.0,
             attack: str = "jbda") -> Path:
    """A complete run; `benign_drop` = victim/acc − victim/acc_defended, `l1` = defense/l1."""
    tag = "_".join(f"{k}{v}" for k, v in sorted({**(params or {}), **(label_options or {})}.items()))
    folder = write_run(root, defense=defense, attack=attack, seed=seed, budget=budget, label_mode=mode,
                       curve=curve or [(budget, acc)], defense_args=params,
                       name=f"{defense}{tag}_{attack}_{mode}_b{budget}_s{seed}")
    payload = json.loads((folder / "results.json").read_text())
    payload["metrics"]["victim/acc_defended"] = payload["metrics"]["victim/acc"] - benign_drop
    payload["metrics"]["defense/l1"] = l1
    payload["config"]["label_options"] = label_options or {}
    (folder / "results.json").write_text(json.dumps(payload))
    return folder
