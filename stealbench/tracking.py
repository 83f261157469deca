"""Weights & Biases: one run per experiment; identity in config, §3 metrics in summary, curve against queries."""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any

from .config import WandbConfig


def resolve_mode(cfg: WandbConfig) -> str:
    """`auto` -> WANDB_MODE if set, else online when an API key is configured, else offline."""
    if cfg.mode != "auto":
        return cfg.mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun", "run"):
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


class Tracker:
    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        self.mode = resolve_mode(cfg)
        self.run = None
        if self.mode == "disabled":
            return
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        self.run = wandb.init(project=cfg.project, entity=cfg.entity, name=name, dir=str(run_dir), mode=self.mode,
                              config=config, tags=cfg.tags or None, reinit="finish_previous")
        self.run.define_metric("queries")
        for key in ("surrogate/acc", "surrogate/fidelity", "round"):
            self.run.define_metric(key, step_metric="queries")

    def lightning_logger(self) -> Any:
        if self.run is None:
            return None
        from lightning.pytorch.loggers import WandbLogger

        return WandbLogger(experiment=self.run)

    def log_point(self, point: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.log(point)

    def finish(self, summary: dict[str, Any], files: list[Path] = ()) -> str:
        """Write the summary and close the run; returns a line saying where it went."""
        if self.run is None:
            return "W&B: disabled"
        for key, value in summary.items():
            self.run.summary[key] = value
        for path in files:
            if path.exists():
                self.run.save(str(path), base_path=str(path.parent), policy="now")
        run_dir = Path(self.run.dir).parent  # .../wandb/offline-run-xxx/files -> .../offline-run-xxx
        url = self.run.url if self.mode == "online" else None
        self.run.finish()
        if self.mode == "offline":
            return f"W&B: offline run in {run_dir}; upload it later with `wandb sync {run_dir}`"
        return f"W&B: {url}"

    def abort(self) -> None:
        if self.run is not None:
            self.run.finish(exit_code=1)
