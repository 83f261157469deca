"""`stealbench fit`: a LightningCLI that builds an Experiment instead of calling Trainer.fit once.

LightningCLI/jsonargparse give `--config`, `--print_config` and typed options (`--defense.beta 0.5`). On top,
short registry keys work wherever a component is chosen: `--defense deceptive` on the command line, and
`defense: deceptive` or `defense: {class_path: deceptive, init_args: {...}}` in YAML.

The attack is the exception: this process knows it by name only. `--attack NAME`, its `--attack.KEY VALUE` options
and a config file's `attack:` section are taken out before jsonargparse sees them (attack_args.py) and become an
AttackChoice; an attacker-side process builds it (checks its options) and answers with its resolved config, which
the run's config and `--print_config` show as `attack: {class_path, init_args}`, as for any component.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import inspect
import json
import logging
import sys
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentError, get_loader as jsonargparse_loader, set_loader
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from . import fit_quick, safe_yaml
from .arguments import check_folder, help_hint, jsonargparse_message
from .attack_args import ATTACK_HELP, check_attack, split_attack_args
from .attacker.label_choice import LabelModeChoice, LabelOptions
from .config import (SECRET_OPTIONS, SEED_RANGE, OracleConfig, SurrogateConfig, Timeouts, VictimConfig, WandbConfig,
                     check_int, check_seed)
from .data.base import ImageDataset
from .defenses.base import Defense
from .errors import ConfigError, StealbenchError
from .plugins import get_catalog
from .devices import check_accelerator
from .rundir import check_name
from .runner import Experiment, run_experiment
from .signals import handle_signals
from .training import PHASE_KEYS

PROG = "stealbench fit"

#: option -> (registry kind, base class, default key; None: the option is unset unless given)
COMPONENTS: dict[str, tuple[str, type, str | None]] = {
    "data": ("datasets", ImageDataset, "digits"),
    "defense": ("defenses", Defense, "none"),
    # the attacker pool from another data set (pools.py), e.g. `--pool_data fashion-mnist --pool_data.root ...`
    "pool_data": ("datasets", ImageDataset, None),
}


def class_path(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def resolve_component(option: str, value: str, shown: str | None = None) -> str:
    """Registry key -> class path; class paths pass through; anything else fails with close matches.
    `shown`: the option as the user typed it, for the message (e.g. `defense.help`)."""
    kind = COMPONENTS[option][0]
    registry = get_catalog().registry(kind)
    if value in registry:
        return class_path(registry.get(value))
    if "." in value:  # a class path: jsonargparse validates it
        return value
    try:
        registry.get(value)
    except StealbenchError as exc:
        raise ConfigError(f"--{shown or option}: {exc}") from None
    return value  # pragma: no cover - registry.get raised


def own_defaults(option: str, path: str) -> dict[str, Any]:
    """`{"class_path": path, "init_args": <the class's own defaults>}` for a chosen component.

    jsonargparse keeps the previous value's init_args whose names the new class also accepts: without this,
    `--data mnist` would silently keep digits' values of same-named options. (The attack is not built here at all:
    attack_args.py, attacker/choice.py.)
    """
    registry = get_catalog().registry(COMPONENTS[option][0])
    cls = next((e.obj for e in registry.entries() if class_path(e.obj) == path), None)
    if cls is None:
        module, _, name = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return {"class_path": path}  # jsonargparse reports the bad class path
    init_args = {}
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.default is inspect.Parameter.empty:
            continue
        try:
            json.dumps(param.default)
        except (TypeError, ValueError):
            continue  # not expressible on the command line: jsonargparse fills it from the signature
        init_args[name] = list(param.default) if isinstance(param.default, tuple) else param.default
    return {"class_path": path, "init_args": init_args}


def _rewrite_config(cfg: Any) -> Any:
    """Resolve registry keys in a loaded YAML config (top level, or under a `fit:` section); a chosen component
    starts from its own defaults, then the file's init_args."""
    if not isinstance(cfg, dict):
        return cfg
    cfg.pop("attack", None)  # taken by attack_args.split_attack_args: built on the attacker's side only
    if isinstance(cfg.get("fit"), dict):
        cfg["fit"].pop("attack", None)
    for option in COMPONENTS:
        value = cfg.get(option)
        if isinstance(value, str):
            cfg[option] = own_defaults(option, resolve_component(option, value))
        elif isinstance(value, dict) and isinstance(value.get("class_path"), str):
            chosen = own_defaults(option, resolve_component(option, value["class_path"]))
            given = value.get("init_args")
            chosen["init_args"] = {**chosen.get("init_args", {}), **(given if isinstance(given, dict) else {})}
            value.update(chosen)
    return cfg


def preprocess_args(args: list[str]) -> list[str]:
    """Rewrite `--defense KEY`, `--defense.help KEY` and config files so that jsonargparse sees class paths, and
    keep a component's options with the component they are given for (see `_options_follow_choices`)."""
    items: list[tuple[str, str, list[str]]] = []  # (kind, component(s) or the --config value, tokens)
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, inline = token.partition("=")
        option = name[2:] if name.startswith("--") else None
        helping = bool(option and option.endswith(".help") and option[:-5] in COMPONENTS)
        if helping:
            option = option[:-5]
        if option in COMPONENTS or name in ("-c", "--config"):
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                items.append(("other", "", [token]))
                break
            if name in ("-c", "--config"):
                text, chosen = _load_config_arg(value)
                items += [("chooses", c, []) for c in chosen] + [("config", value, [name, text])]
                i += 1
                continue
            if not value.lstrip().startswith(("{", "[")):
                value = resolve_component(option, value, shown=name[2:])
                if not helping:
                    value = json.dumps(own_defaults(option, value))
            items.append(("other" if helping else "choice", option, [name, value]))
        elif name == "--trainer" and not eq and i + 1 < len(args) and Path(args[i + 1]).is_file():
            # jsonargparse reads this file itself (sub_configs): the same limits as --config, before it does
            safe_yaml.read(args[i + 1], "--trainer")
            items.append(("other", "", [token]))
        elif option and option.partition(".")[0] in COMPONENTS:  # --attack.rounds 3 (or --attack.rounds=3)
            takes = [token] if eq or i + 1 >= len(args) else [token, args[i + 1]]
            items.append(("sub", option.partition(".")[0], takes))
            i += len(takes) - 1
        else:
            items.append(("other", "", [token]))
        i += 1
    return [t for _, _, tokens in _options_follow_choices(items) for t in tokens]


def _options_follow_choices(items: list[tuple[str, str, list[str]]]) -> list:
    """jsonargparse applies `--defense.beta 0.3` to the defense chosen so far and drops it, without a word, when a
    later `--defense topk` replaces that defense. Options given before a later choice move behind it instead:
    they apply to the chosen component, or fail there as "not an option of topk". A later --config that
    chooses the component cannot be reordered like that (its other values would change order): an error.
    (attack_args.py gives the attack's options the same rules.)"""
    out = list(items)
    for component in COMPONENTS:
        for pos in range(len(out) - 1, -1, -1):
            kind, owner, tokens = out[pos]
            if kind == "chooses" and owner == component:  # just before its ("config", file, tokens) item
                early = next((t[0].split("=")[0] for k, o, t in out[:pos] if k == "sub" and o == component), None)
                if early:
                    raise ConfigError(f"{early} comes before --config {out[pos + 1][1]!r}, which chooses the "
                                      f"{component} and so resets its options; put {early} after --config")
                break
            if kind == "choice" and owner == component:
                early = [item for item in out[:pos] if item[0] == "sub" and item[1] == component]
                kept = [item for item in out[:pos + 1] if item not in early]
                out = kept + early + out[pos + 1:]
                break
    return out


def _load_config_arg(value: str) -> tuple[str, list[str]]:
    """The --config file or inline YAML, checked and rewritten; and the components it chooses."""
    path = Path(value)
    if not path.is_file():
        if value.lstrip().startswith(("{", "[")) or ":" in value:
            text = value  # an inline YAML/JSON string, as jsonargparse allows
        else:
            raise ConfigError(f"--config {value!r}: no such file")
    else:
        text = safe_yaml.read_text(path, "--config")  # size, binary and encoding checked before parsing
    loaded = safe_yaml.parse(text, f"--config {value!r}")
    if loaded is None:
        loaded = {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"--config {value!r} must hold a mapping of options, got {type(loaded).__name__}")
    loaded = _rewrite_config(loaded)
    section = loaded.get("fit") if isinstance(loaded.get("fit"), dict) else loaded
    chosen = [o for o in COMPONENTS if isinstance(section.get(o), dict) and "class_path" in section[o]]
    return yaml.safe_dump(loaded, sort_keys=False), chosen


def _guarded_yaml_load(text: str) -> Any:
    """jsonargparse's YAML loader behind safe_yaml's limits: every value and file jsonargparse parses itself
    (`--trainer FILE`, `--label_options '{...}'`, the rewritten --config) passes them too."""
    try:
        safe_yaml.loads(text)
    except safe_yaml.Refused as exc:  # not a YAMLError for jsonargparse: it would retry the value as a string
        raise ConfigError(f"option value refused: {exc}") from None
    except (yaml.YAMLError, ValueError):
        pass  # plain bad YAML: jsonargparse's own loader decides (often: the value is a string)
    return _JSONARGPARSE_YAML_LOAD(text)


_JSONARGPARSE_YAML_LOAD = jsonargparse_loader("yaml")
set_loader("yaml", _guarded_yaml_load, exceptions=(yaml.YAMLError,))


class StealbenchCLI(LightningCLI):
    """LightningCLI for stealbench experiments (run=False: we run the experiment ourselves)."""

    def __init__(self, args: list[str]) -> None:
        super().__init__(
            args=args,
            run=False,
            save_config_callback=None,
            auto_configure_optimizers=False,
            load_from_checkpoint_support=False,
            # exit_on_error=False: parse errors raise ArgumentError, which parse_arguments shortens
            parser_kwargs={"prog": PROG, "description": "Run one model-stealing experiment.",
                           "default_env": False, "exit_on_error": False},
        )

    def add_default_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_argument("--seed", type=int, default=0, help="seed for the victim (unless --victim.seed), "
                            f"the attack's random choices and surrogate training; {SEED_RANGE}")

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Trainer options (accelerator, devices, precision, ...) are a template: each phase builds its own Trainer.
        # Keys stealbench sets per phase are left out, so `--trainer.max_epochs` fails loudly instead of being ignored.
        parser.add_class_arguments(Trainer, "trainer", instantiate=False, fail_untyped=False, sub_configs=True,
                                   skip=set(PHASE_KEYS))
        for option, (_, base, default) in COMPONENTS.items():
            parser.add_subclass_arguments(base, option, required=False, fail_untyped=False,
                                          help=f"{option}: a registry key (`stealbench list "
                                               f"{COMPONENTS[option][0]}`) or a class path")
            if default is not None:
                parser.set_defaults({option: {"class_path": resolve_component(option, default)}})
        # a name only here (attack_args.py): the attacker's side builds it; the dump shows its resolved config
        parser.add_argument("--attack", type=str, default="jbda", help=ATTACK_HELP)
        parser.add_class_arguments(VictimConfig, "victim")
        parser.add_class_arguments(SurrogateConfig, "surrogate")
        parser.add_class_arguments(WandbConfig, "wandb")
        parser.add_class_arguments(Timeouts, "timeouts")  # seconds per phase; a plugin that never returns
        parser.add_class_arguments(OracleConfig, "oracle")  # --oracle.url: attack a V2 endpoint instead
        parser.add_argument("--budget", type=int, default=3200, help="maximum number of oracle queries (>= 1)")
        # names only here (attacker/label_choice.py): the attacker's side builds the mode and checks its options
        parser.add_argument("--label_mode", type=str, default="soft",
                            help="a registered label mode (`stealbench list label_modes` lists them, the defenses "
                                 "each answers and its options). Built in the attacker's process only")
        parser.add_argument("--label_options", type=dict[str, Any], default={},
                            help="options of the chosen label mode, e.g. --label_options.k 4 "
                                 "(`stealbench list label_modes`)")
        parser.add_argument("--output_dir", type=str, default="runs", help="parent folder of run folders")
        parser.add_argument("--name", type=str | None, default=None, help="run folder name (default: derived)")
        parser.add_argument("--progress_bar", type=bool | None, default=None,
                            help="Lightning progress bars (default: only on a terminal)")
        parser.add_argument("--sandbox", type=Literal["auto", "bwrap", "off"], default="auto",
                            help="where the attacker's process runs: bwrap (an OS sandbox: no network, no files "
                                 "of the run, no /proc of the defender), off (its own process, sealed in memory "
                                 "only), auto (bwrap where it works here, else off with a notice)")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        # not super(): it warns when args are given while sys.argv is set, which is always the case here
        args = list(args)
        printing = [a for a in args if a == "--print_config" or a.startswith("--print_config=")]
        if printing:
            # checked as `fit` would (parse, ranges, components built, the attack built on its side), then printed
            # with the attack's resolved config, which jsonargparse cannot know
            self._parse([a for a in args if a not in printing], parser)
            self.instantiate_classes()
            print(self.config_dump(), end="")
            raise SystemExit(0)
        self._parse(args, parser)

    def _parse(self, args: list[str], parser: LightningArgumentParser) -> None:
        rest, self.attack_choice, helping = split_attack_args(args)
        if helping is not None:  # `--attack.help KEY`: the attacker's side describes the attack
            from .attacker.launch import ask_attacker

            print(ask_attacker("off", (), lambda link: link.help(helping)), end="")
            raise SystemExit(0)
        fit_quick.store_options(parser)  # once per installed code: later mistyped names fail without Lightning
        try:
            self.config = parser.parse_args(preprocess_args(rest))
        except ArgumentError as exc:
            raise ConfigError(_short_message(str(exc), parser, args)) from None
        validate_config(self.config)

    def _set_seed(self) -> None:
        """Seeding happens in the runner, per phase, from --seed."""

    def instantiate_classes(self) -> None:
        try:
            self.config_init = self.parser.instantiate(self.config)
        except StealbenchError:
            raise
        except Exception as exc:  # jsonargparse wraps errors raised in a component's __init__
            cause = exc
            while cause.__cause__ is not None and not isinstance(cause, StealbenchError):
                cause = cause.__cause__
            if isinstance(cause, StealbenchError):
                raise cause from None
            raise ConfigError(str(exc)) from exc
        check_architectures(self.config_init)
        check_trainer(_trainer_template(self.config))
        self.attack_resolved = check_attack(self.attack_choice, self.config, self.config_init)

    def config_dump(self) -> str:
        """The resolved config as YAML, the attack's section from its side, API keys redacted."""
        loaded = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
        ordered = {}
        for key, value in loaded.items():  # the attack's section where jsonargparse had it
            ordered[key] = self.attack_resolved["config"] if key == "attack" else value
        return _redacted_dump(yaml.safe_dump(ordered, sort_keys=False))

    def experiment(self) -> Experiment:
        cfg, init = self.config, self.config_init
        dump = self.config_dump()
        keys = {option: _key_of(option, cfg[option]["class_path"]) for option in COMPONENTS if cfg.get(option)}
        keys["attack"] = self.attack_resolved["key"]
        progress = cfg.progress_bar if cfg.progress_bar is not None else sys.stdout.isatty()
        return Experiment(
            data=init.data, defense=init.defense, attack=self.attack_choice, keys=keys, budget=cfg.budget,
            label_mode=cfg.label_mode, seed=cfg.seed, victim=init.victim, surrogate=init.surrogate,
            wandb=init.wandb, trainer=_trainer_template(cfg), output_dir=cfg.output_dir,
            name=cfg.name, config=yaml.safe_load(dump), config_yaml=dump, progress_bar=progress,
            label_options=LabelOptions(cfg.label_options or {}), pool_data=init.get("pool_data"),
            sandbox=cfg.sandbox, timeouts=init.timeouts, oracle=init.oracle,
        )


def _redacted_dump(dump: str) -> str:
    """The resolved config without the API keys (--oracle.api_key, --oracle.referee_key)."""
    loaded = yaml.safe_load(dump)
    section = loaded.get("oracle") if isinstance(loaded, dict) else None
    if not isinstance(section, dict) or not any(section.get(o.rpartition(".")[2]) for o in SECRET_OPTIONS):
        return dump
    for option in SECRET_OPTIONS:
        key = option.rpartition(".")[2]
        if section.get(key) is not None:
            section[key] = "***"
    return yaml.safe_dump(loaded, sort_keys=False)


def _trainer_template(cfg: Any) -> dict[str, Any]:
    """The --trainer.* options as Trainer keywords; `--trainer FILE` adds jsonargparse's `__path__` (not one)."""
    template = dict(cfg.trainer.clone().as_dict())
    template.pop("__path__", None)
    return template


def validate_config(cfg: Any) -> None:
    """Ranges of the options that no dataclass or component owns; checked before anything is built."""
    check_int("budget", cfg.budget, 1)
    check_seed("seed", cfg.seed)
    # the mode's shape now; the mode and its options on the attacker's side, before anything trains (check_attack)
    LabelModeChoice.checked(cfg.label_mode, cfg.label_options or {})
    for option in COMPONENTS:  # every component option named *seed is a seed, e.g. --data.split_seed
        init_args = (cfg.get(option) or {}).get("init_args") or {}
        for key, value in init_args.items():
            if (key == "seed" or key.endswith("_seed")) and value is not None:  # null: the run's --seed
                check_seed(f"{option}.{key}", value)
    if cfg.name is not None:
        check_name(cfg.name)  # the same rule the run folder enforces (rundir.py), checked before any work
    check_folder("output_dir", cfg.output_dir)
    if cfg.oracle.url and cfg.defense and cfg.defense.get("class_path") != resolve_component("defense", "none"):
        raise ConfigError("--defense applies to the local victim; with --oracle.url the endpoint answers with its "
                          "own defense (leave --defense unset)")
    if cfg.oracle.url:  # no local victim: its options would be recorded as if used
        changed = [f"--victim.{f.name}" for f in dataclasses.fields(VictimConfig)
                   if f.name not in ("cache", "cache_dir") and cfg.victim.get(f.name) != f.default]
        if changed:
            raise ConfigError(f"{', '.join(changed)} set the local victim; with --oracle.url the endpoint's model "
                              "answers (leave them unset)")
    if cfg.victim.cache_dir:
        check_folder("victim.cache_dir", cfg.victim.cache_dir)


def check_architectures(init: Any) -> None:
    """Unknown --victim.arch / --surrogate.arch fail before any data is loaded."""
    for role in ("victim", "surrogate"):
        try:
            get_catalog().architectures.get(init[role].arch)
        except StealbenchError as exc:
            raise ConfigError(f"--{role}.arch: {exc}") from None


def check_trainer(template: dict[str, Any]) -> None:
    """Build and drop a Trainer from the --trainer.* template, so that a bad accelerator, device count or precision
    fails in one line now rather than as a Lightning traceback once the data has loaded."""
    check_accelerator(template)  # a missing GPU first, in stealbench's words
    quiet = {"logger": False, "enable_checkpointing": False, "enable_progress_bar": False,
             "enable_model_summary": False, "max_epochs": 1}
    log = logging.getLogger("lightning.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)  # Trainer() announces the accelerators it found; not news at parse time
    try:
        with warnings.catch_warnings():  # e.g. "GPU available but not used": each phase's Trainer says so
            warnings.simplefilter("ignore")
            Trainer(**{**template, **quiet})
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as exc:
        raise ConfigError(f"--trainer options: {exc}") from None
    finally:
        log.setLevel(level)


def _short_message(message: str, parser: LightningArgumentParser, args: list[str]) -> str:
    """jsonargparse's error -> one line; stealbench's per-phase Trainer keys get a pointer to the right option."""
    known = [o for action in parser._actions for o in action.option_strings]
    if message.endswith("expected one argument") and args and args[-1].startswith("--"):
        # jsonargparse names the component (`--data`) when its nested option (`--data.root`) lacks a value
        return f"{args[-1]} expects a value {help_hint(PROG)}"
    unknown = next((t.split("=")[0] for t in message.split() if t.startswith("--trainer.")), "")
    if message.startswith("unrecognized arguments") and unknown.removeprefix("--trainer.") in PHASE_KEYS:
        return (f"{unknown} is set by stealbench for each phase; use --victim.epochs for the victim and the "
                f"attack's options (e.g. --attack.epochs_per_round) for the surrogate")
    return jsonargparse_message(message, PROG, known, describe=_describe_class)


def _describe_class(path: str) -> str:
    for option in COMPONENTS:
        key = _key_of(option, path)
        if key != path:
            return f"{key} ({path})"
    return path


def _key_of(option: str, path: str) -> str:
    registry = get_catalog().registry(COMPONENTS[option][0])
    for entry in registry.entries():
        if class_path(entry.obj) == path:
            return entry.key
    return path  # a class path that no plugin registered


def check_fit_args(args: list[str]) -> None:
    """Parse a run's options and build its components without running it: ConfigError when they are bad."""
    StealbenchCLI(args)


def fit_main(args: list[str]) -> int:
    if fit_quick.is_help(args):  # stored for the next `fit --help` (fit_quick.py), printed as usual
        out = io.StringIO()
        try:
            with contextlib.redirect_stdout(out):
                StealbenchCLI(args)
        except SystemExit as exc:
            if exc.code in (0, None) and out.getvalue():
                fit_quick.store_help(out.getvalue())
            raise
        finally:
            print(out.getvalue(), end="")
        return 0
    with handle_signals():  # SIGTERM / Ctrl-C raise RunInterrupted, whatever Lightning does with signals
        cli = StealbenchCLI(args)
        run_experiment(cli.experiment())
    return 0
