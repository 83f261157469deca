"""Weights & Biases: one run per experiment; identity in config, §3 metrics in summary, curve against queries.

Online logging must never cost a run: without a login an explicit `--wandb.mode online` fails at once with what to
do; in `auto` mode an unreachable or refusing server falls back to an offline run (synced later) within
INIT_TIMEOUT seconds instead of wandb's default 90.
"""

from __future__ import annotations

import netrc
import os
from urllib.parse import urlparse
from pathlib import Path
from typing import Any

from . import console
from .config import WandbConfig
from .errors import ConfigError

#: seconds wandb.init may spend reaching the server before an `auto` run falls back to offline
INIT_TIMEOUT = float(os.environ.get("STEALBENCH_WANDB_INIT_TIMEOUT", "20"))


def resolve_mode(cfg: WandbConfig) -> str:
    """`auto` -> WANDB_MODE if set, else online when an API key is configured, else offline."""
    if cfg.mode != "auto":
        return cfg.mode
    env = os.environ.get("WANDB_MODE")
    if env in ("online", "offline", "disabled", "dryrun", "run"):
        return {"dryrun": "offline", "run": "online"}.get(env, env)
    if has_api_key():
        return "online"
    return "offline"


def _host() -> str:
    url = os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai"
    return urlparse(url).hostname or "api.wandb.ai"


def has_api_key() -> bool:
    """Whether wandb will find credentials: WANDB_API_KEY, an identity token, or a netrc entry for the server."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return bool(netrc.netrc(path).authenticators(_host()))
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


def _online_explicit(cfg: WandbConfig) -> bool:
    """Online because the user said so (option or WANDB_MODE), not because `auto` found a key."""
    return cfg.mode == "online" or (cfg.mode == "auto" and os.environ.get("WANDB_MODE") in ("online", "run"))


class Tracker:
    def __init__(self, cfg: WandbConfig, run_dir: Path, name: str, config: dict[str, Any]) -> None:
        self.mode = resolve_mode(cfg)
        self.run = None
        if self.mode == "disabled":
            return
        explicit = _online_explicit(cfg)
        if self.mode == "online" and not has_api_key():
            raise ConfigError(f"--wandb.mode online: not logged in to W&B (no WANDB_API_KEY and no netrc entry for "
                              f"{_host()}); run `wandb login` or use --wandb.mode offline")
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(project=cfg.project, entity=cfg.entity, name=name, dir=str(run_dir), config=config,
                      tags=cfg.tags or None, reinit="finish_previous")
        try:
            self.run = wandb.init(mode=self.mode, settings=wandb.Settings(init_timeout=INIT_TIMEOUT), **kwargs)
        except Exception as exc:  # noqa: BLE001 - wandb raises CommError, AuthenticationError, UsageError, ...
            if self.mode != "online":
                raise ConfigError(f"W&B could not start an {self.mode} run in {run_dir}: {_first_line(exc)}; use "
                                  "--wandb.mode disabled to run without W&B") from exc
            if explicit:
                raise ConfigError(f"--wandb.mode online: W&B at {_host()} did not accept the run "
                                  f"({_first_line(exc)}); check the network and run `wandb login`, or use "
                                  "--wandb.mode offline") from exc
            console.info(f"[yellow]warning[/]: W&B at {console.escape(_host())} did not answer within "
                         f"{INIT_TIMEOUT:.0f}s ({console.escape(_first_line(exc))}); logging offline instead "
                         "(upload later with `wandb sync`)")
            self.mode = "offline"
            self.run = wandb.init(mode="offline", **kwargs)
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

    def add_config(self, values: dict[str, Any]) -> None:
        """Add keys to the run's config that are known only at the end (the attacker's reproducibility record)."""
        if self.run is not None:
            self.run.config.update(values, allow_val_change=True)

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


def _first_line(exc: BaseException) -> str:
    text = str(exc).split("Consider increasing")[0]  # wandb's advice to wait longer is not ours
    return " ".join(text.split())[:300] or type(exc).__name__
