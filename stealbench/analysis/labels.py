"""Labels that tell runs apart: a defense by key and parameters, an attack and a label mode by the parameters
(`init_args`, `label_options`) that vary between runs of the same key, a run by the other settings that differ
between runs (victim epochs, data split, ...).

Label options are the attacker's choice, like the label mode itself: they label the mode (`invert(beta=1.0)`),
never the setting, so every attacker variant of a cell stays comparable in one best response
(stealbench.analysis.best_response)."""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from .runs import Run

#: the pool of a run without --pool_data (the grid's `pools:` entry of the same name)
OWN_POOL = "own"

#: config keys that do not change what a run measures (left out when telling settings apart)
_IGNORED_CONFIG = ("seed", "budget", "label_mode", "label_options", "name", "output_dir", "progress_bar", "sandbox",
                   "wandb", "defense", "attack", "pool_data",  # the pool is labelled by its key (pool_key)
                   "oracle",  # how to reach an endpoint (the identity names the endpoint itself)
                   "data.class_path", "data.init_args.root", "data.init_args.download", "victim.cache",
                   "victim.cache_dir", "victim.checkpoint", "trainer.accelerator", "trainer.devices",
                   "trainer.strategy", "trainer.num_nodes", "trainer.logger", "trainer.callbacks",
                   "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.default_root_dir",
                   "trainer.enable_checkpointing")



def pool_key(run: Run) -> str:
    """The attacker's pool: "own" (the victim data set's pool split) or the --pool_data set's registry key."""
    return str(run.identity.get("pool_data") or OWN_POOL)


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(cfg, dict):
        return {prefix[:-1]: cfg}
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in _IGNORED_CONFIG)


def fmt_param(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, dict, bool)) or value is None else str(value)


def _options(run: Run, part: str) -> dict[str, Any]:
    """The parameters of a run's defense or attack (`init_args`) or of its label mode (`label_options`)."""
    if part == "label_mode":
        args = run.config.get("label_options")
    else:
        section = run.config.get(part)
        args = section.get("init_args") if isinstance(section, dict) else None
    return flatten_config(args) if isinstance(args, dict) and args else {}


def assign_labels(runs: list[Run]) -> None:
    """Label defenses by key plus their init parameters, attacks and label modes by key plus the parameters that
    differ between runs of the same key, and every run by the other settings that differ between runs (victim
    epochs, data split, ...)."""
    for part in ("defense", "attack", "label_mode"):
        by_key: dict[str, list[dict]] = defaultdict(list)
        params = {}
        for run in runs:
            params[id(run)] = _options(run, part)
            by_key[run.identity[part]].append(params[id(run)])
        # defenses show all their (few) parameters, attacks and label modes only those that differ between runs
        varying = {key: sorted({k for p in plist for k in p
                                if part == "defense" or len({fmt_param(q.get(k)) for q in plist}) > 1})
                   for key, plist in by_key.items()}
        for run in runs:
            key = run.identity[part]
            shown = [f"{k}={fmt_param(params[id(run)].get(k))}" for k in varying[key]]
            setattr(run, f"{part}_label", f"{key}({', '.join(shown)})" if shown else key)
    flat = {id(run): {k: v for k, v in flatten_config(run.config).items() if not _ignored(k)} for run in runs}
    keys = sorted({k for f in flat.values() for k in f})
    varying = [k for k in keys if len({fmt_param(f.get(k)) for f in flat.values()}) > 1]
    pools = {pool_key(run) for run in runs}
    for run in runs:
        archs = [f"pool={pool_key(run)}"] if len(pools) > 1 else []
        if any(r.identity["victim_arch"] != run.identity["victim_arch"] for r in runs):
            archs.append(f"victim={run.identity['victim_arch']}")
        if any(r.identity["surrogate_arch"] != run.identity["surrogate_arch"] for r in runs):
            archs.append(f"surrogate={run.identity['surrogate_arch']}")
        run.setting = ", ".join(archs + [f"{k}={fmt_param(flat[id(run)].get(k))}" for k in varying])


__all__ = ["OWN_POOL", "assign_labels", "flatten_config", "fmt_param", "pool_key"]
