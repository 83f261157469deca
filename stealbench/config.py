"""Typed option groups of an experiment. Their fields are the CLI options (`--victim.arch`, `--wandb.mode`, ...)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .errors import ConfigError

LabelMode = Literal["soft", "hard"]

#: larger batches only exhaust memory (a batch of 10**6 CIFAR images is 12 GB as float32): refused at parse time
MAX_BATCH_SIZE = 16384

#: seeds must fit numpy's and Lightning's seed_everything range (unsigned 32 bits)
SEED_RANGE = "0 <= seed < 2**32"


def check_int(option: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    """`--option` must be an integer >= minimum (and <= maximum; bool is not an integer here, whatever Python
    says)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        bound = f">= {minimum} and <= {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"--{option} must be an integer {bound}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"--{option} must be an integer <= {maximum} (the limit, to keep memory bounded), "
                          f"got {value!r}")


def check_float(option: str, value: Any, *, positive: bool, optional: bool = False) -> None:
    """`--option` must be a finite number, > 0 (positive) or >= 0 (or None, where `optional`)."""
    if optional and value is None:
        return
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        bound = "> 0" if positive else ">= 0"
        raise ConfigError(f"--{option} must be a finite number {bound}, got {value!r}")


def check_seed(option: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
        raise ConfigError(f"--{option} must be an integer with {SEED_RANGE} (Lightning's seed_everything "
                          f"limit), got {value!r}")


def check_url(url: str, option: str = "--oracle.url") -> str:
    """`http(s)://host[:port][/prefix]`, without a trailing slash; ConfigError otherwise."""
    from urllib.parse import urlsplit

    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{option} must be an http:// or https:// URL with a host, got {url!r}")
    if parts.username or parts.password or parts.query or parts.fragment:
        raise ConfigError(f"{option} takes no credentials, query or fragment (use --oracle.api_key): {url!r}")
    return url.rstrip("/")


@dataclass
class OracleConfig:
    """A remote oracle: attack any Open Inference Protocol (KServe V2 REST) endpoint instead of a local victim.

    Args:
        url: the endpoint, e.g. http://127.0.0.1:8000 (null: the local victim + --defense, as usual)
        model_name: the model's name at the endpoint (/v2/models/NAME)
        api_key: sent as `Authorization: Bearer KEY` for the attacker's queries (never written to results)
        account: sent as `X-Account` for the attacker's queries
        referee_key: API key of the referee's own account, which answers the evaluation set (null: none)
        referee_account: `X-Account` of the referee (default: ACCOUNT-referee), outside the attacker's budget
        timeout: seconds per HTTP request (> 0)
        retries: retries after a timeout, a failed connection or a 5xx answer (0 to 10), with backoff
        binary: send images and take answers as raw bytes (the V2 binary tensor data extension); false: JSON. An
            endpoint that refuses the first binary request (400/415/422) is asked in JSON from then on
        quantize: the channel's bits per pixel (1 to 16; null: off, exact float pixels). 8 is a realistic image
            API: the local oracle rounds every attacker query to 8 bits (x -> round(255 x) / 255) on the
            defender's side, before the victim and the defense see it. Recorded in the run's identity
            (`oracle_quantize`). Not with --oracle.url (an endpoint's channel is its own)
        accounts: the attacker's queries spread over this many accounts (1 to --budget): a stateful defense
            (PRADA, ModelGuard-S) keeps one state per account, and results.json reports each account's queries,
            state and detector figures (`accounts`). Recorded in the run's identity when above 1
            (`oracle_accounts`). Not with --oracle.url (name the accounts at the endpoint instead)
        account_split: how queries are charged to the accounts: `round_robin` (query i to account i mod k, the
            stream interleaved) or `sequential` (the budget cut into k consecutive shares)
        benign_state: where benign users' images (the evaluation set, answered during the attack) go: `shared`
            (mixed into the attacker's batches, so a stateful defense's state holds them too: the earlier
            behaviour) or `own` (an account of their own: their own batches and state; its detector figures,
            `accounts/benign/...`, are false alarms). Recorded in the run's identity when `own`
    """

    url: str | None = None
    model_name: str = "victim"
    api_key: str | None = None
    account: str = "attacker"
    referee_key: str | None = None
    referee_account: str | None = None
    timeout: float = 30.0
    retries: int = 3
    binary: bool = True
    quantize: int | None = None
    accounts: int = 1
    account_split: str = "round_robin"
    benign_state: str = "shared"

    def __post_init__(self) -> None:
        if self.url is not None:
            self.url = check_url(self.url)
        if not self.model_name or "/" in self.model_name:
            raise ConfigError(f"--oracle.model_name must be a name without '/', got {self.model_name!r}")
        check_float("oracle.timeout", self.timeout, positive=True)
        check_int("oracle.retries", self.retries, 0, 10)
        if not isinstance(self.binary, bool):
            raise ConfigError(f"--oracle.binary must be true or false, got {self.binary!r}")
        if self.quantize is not None:
            check_int("oracle.quantize", self.quantize, 1, 16)
            if self.url is not None:
                raise ConfigError("--oracle.quantize is the local oracle's channel; with --oracle.url the "
                                  "endpoint's channel is its own")
        check_int("oracle.accounts", self.accounts, 1, None)
        if self.account_split not in ("round_robin", "sequential"):
            raise ConfigError(f"--oracle.account_split must be round_robin or sequential, got {self.account_split!r}")
        if self.benign_state not in ("shared", "own"):
            raise ConfigError(f"--oracle.benign_state must be shared or own, got {self.benign_state!r}")
        if (self.accounts > 1 or self.benign_state != "shared") and self.url is not None:
            raise ConfigError("--oracle.accounts and --oracle.benign_state are the local oracle's; with --oracle.url "
                              "the endpoint keeps its own accounts (run one fit per --oracle.account NAME)")

    def record(self) -> dict[str, Any]:
        """What results.json keeps: the endpoint and accounts, never the keys."""
        return {"url": self.url, "model_name": self.model_name, "account": self.account,
                "referee_account": self.referee_account or f"{self.account}-referee",
                "api_key": "set" if self.api_key else None, "referee_key": "set" if self.referee_key else None,
                "binary": self.binary}


#: options whose values never reach results.json, config.yaml or the recorded command line
SECRET_OPTIONS = ("--oracle.api_key", "--oracle.referee_key")


def redact_argv(argv: list[str]) -> list[str]:
    out, hide = [], False
    for token in argv:
        name = token.split("=", 1)[0]
        if hide:
            out.append("***")
            hide = False
        elif name in SECRET_OPTIONS:
            out.append(f"{name}=***" if "=" in token else token)
            hide = "=" not in token
        else:
            out.append(token)
    return out


@dataclass
class VictimConfig:
    """The victim: architecture and training. Trained victims are cached and reused across runs.

    Args:
        arch: registry key (`stealbench list architectures`) or any timm model name
        epochs: training epochs (>= 1)
        batch_size: training batch size (1 to 16384)
        recipe: training recipe (`default`, `cifar-sgd`, `cifar-onecycle`, `adamw-cosine`; stealbench/recipes.py)
        lr: learning rate (> 0; null: the recipe's)
        weight_decay: weight decay (>= 0; null: the recipe's)
        seed: victim seed, 0 <= seed < 2**32 (null: the run's --seed)
        checkpoint: load these weights instead of training (stealbench .pt or Lightning .ckpt)
        cache: reuse a cached victim trained with the same settings
        cache_dir: victim cache (default: $STEALBENCH_CACHE_DIR or ~/.cache/stealbench)
    """

    arch: str = "cnn"  # registry key (`stealbench list architectures`) or any timm model name
    epochs: int = 10
    batch_size: int = 64
    recipe: str = "default"  # training recipe (stealbench/recipes.py): optimiser, schedule, augmentation
    lr: float | None = None  # None: the recipe's (default: 1e-3); a value overrides it
    weight_decay: float | None = None  # None: the recipe's (default: 0); a value overrides it
    seed: int | None = None  # None: the run's --seed
    checkpoint: str | None = None  # load these weights instead of training (stealbench .pt or Lightning .ckpt)
    cache: bool = True  # reuse a cached victim trained with the same settings
    cache_dir: str | None = None  # default: $STEALBENCH_CACHE_DIR or ~/.cache/stealbench

    def __post_init__(self) -> None:
        # Lightning reads max_epochs=-1 as "no limit" and 0 as "no training": both must fail here, not later
        check_int("victim.epochs", self.epochs, 1)
        check_int("victim.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_float("victim.lr", self.lr, positive=True, optional=True)  # None: the recipe's
        check_float("victim.weight_decay", self.weight_decay, positive=False, optional=True)
        if self.seed is not None:
            check_seed("victim.seed", self.seed)
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise ConfigError(f"--victim.checkpoint: no such file {self.checkpoint!r}")


@dataclass
class SurrogateConfig:
    """The attacker's model: architecture and optimiser (epochs are the attack's choice).

    Args:
        arch: registry key (`stealbench list architectures`) or any timm model name
        batch_size: training batch size (1 to 16384)
        recipe: training recipe (`default`, `cifar-sgd`, `cifar-onecycle`, `adamw-cosine`; stealbench/recipes.py)
        lr: learning rate (> 0; null: the recipe's)
        weight_decay: weight decay (>= 0; null: the recipe's)
        pretrained: start from timm's pretrained weights (timm architectures only)
    """

    arch: str = "cnn"
    batch_size: int = 64
    recipe: str = "default"  # training recipe (stealbench/recipes.py)
    lr: float | None = None  # None: the recipe's (default: 1e-3); a value overrides it
    weight_decay: float | None = None  # None: the recipe's (default: 0); a value overrides it
    pretrained: bool = False  # start from timm's pretrained weights (timm architectures only; see models/timm_models)

    def __post_init__(self) -> None:
        check_int("surrogate.batch_size", self.batch_size, 1, MAX_BATCH_SIZE)
        check_float("surrogate.lr", self.lr, positive=True, optional=True)  # None: the recipe's
        check_float("surrogate.weight_decay", self.weight_decay, positive=False, optional=True)


@dataclass
class WandbConfig:
    """Weights & Biases logging. `auto`: online when logged in, else offline (sync later); WANDB_MODE wins."""

    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "stealbench"
    entity: str | None = None
    tags: list[str] = field(default_factory=list)


@dataclass
class Timeouts:
    """Seconds each phase may take before the run ends as failed, naming the phase and the plugin (None: no
    limit). Generous: they catch a plugin that never returns, not a slow one."""

    victim: float | None = 24 * 3600.0  # training (or loading) the victim
    defense_setup: float | None = 6 * 3600.0  # the defense's setup()
    attack: float | None = 48 * 3600.0  # the whole attack, in the attacker's process
    attack_setup: float | None = 600.0  # building the label mode and the attack from their names, in its process
    answer: float | None = 900.0  # the defender's side answering one request (e.g. the defense on one batch)

    def __post_init__(self) -> None:
        for name in ("victim", "defense_setup", "attack", "attack_setup", "answer"):
            check_float(f"timeouts.{name}", getattr(self, name), positive=True, optional=True)
