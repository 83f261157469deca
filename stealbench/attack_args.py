"""`stealbench fit`'s attack options, taken out of its arguments as plain data (the defender never builds an attack).

`--attack NAME` (a registry key or a class path, or a `{class_path, init_args}` mapping), `--attack.KEY VALUE`
and a `--config` file's `attack:` section (top level or under `fit:`) become one AttackChoice: the name, and the
option values as given (command-line text, the file's loaded values). The attacker's side converts and checks
them against the attack's signature (attacker/choice.py). The rules are those of every other component:

- `--attack.KEY` options apply to the attack finally chosen, also when given before a later `--attack NAME`
  (`--attack.rounds 3 --attack random` fails as "not an option of random");
- `--attack NAME` starts from that attack's own defaults: a config file's options for an earlier attack are dropped;
- a `--config` that chooses the attack resets its options, so `--attack.KEY` before it is an error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import safe_yaml
from .attacker.choice import DEFAULT_ATTACK, AttackChoice
from .errors import ConfigError

ATTACK_HELP = ("attack: a registry key (`stealbench list attacks`) or a class path; its options are "
               "--attack.KEY VALUE (`--attack.help KEY` lists them). Built in the attacker's process only")


def split_attack_args(args: list[str]) -> tuple[list[str], AttackChoice, str | None]:
    """(the other arguments, the attack chosen with its options, the key of `--attack.help KEY` or None)."""
    rest: list[str] = []
    key, given, options = DEFAULT_ATTACK, {}, {}  # given: a config's or a mapping's options; options: --attack.K
    first_option: str | None = None
    helping = None
    i = 0
    while i < len(args):
        token = args[i]
        name, eq, inline = token.partition("=")
        if name in ("--attack", "--attack.help") or name.startswith("--attack."):
            if eq:
                value = inline
            elif i + 1 < len(args):
                i += 1
                value = args[i]
            else:
                raise ConfigError(f"{name} expects a value (see stealbench fit --help)")
            if name == "--attack.help":
                helping = value
            elif name == "--attack":
                key, given = _choice_value(value)
            else:
                option = name[len("--attack."):].removeprefix("init_args.")
                options[option] = value
                first_option = first_option or name
        elif name in ("-c", "--config"):
            rest.append(token)
            if not eq and i + 1 < len(args):
                i += 1
                rest.append(args[i])
            section = _config_attack(inline if eq else (args[i] if i < len(args) else ""))
            if section is not None:
                if first_option:
                    raise ConfigError(f"{first_option} comes before --config {rest[-1]!r}, which chooses the attack "
                                      f"and so resets its options; put {first_option} after --config")
                key, given = section
        else:
            rest.append(token)
        i += 1
    return rest, AttackChoice(key, {**given, **options}), helping


def _choice_value(value: Any) -> tuple[str, dict[str, Any]]:
    """`--attack` / `attack:` value -> (key or class path, options)."""
    if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
        value = safe_yaml.parse(value, "--attack")
    if isinstance(value, str) and value.strip():
        return value.strip(), {}
    if isinstance(value, dict) and isinstance(value.get("class_path"), str):
        init_args = value.get("init_args") or {}
        if not isinstance(init_args, dict):
            raise ConfigError(f"attack init_args must be a mapping of options, got {type(init_args).__name__}")
        return value["class_path"], dict(init_args)
    raise ConfigError(f"--attack expects an attack's registry key (`stealbench list attacks`), got {value!r}")


def _config_attack(value: str) -> tuple[str, dict[str, Any]] | None:
    """The attack a --config (a file or inline YAML) chooses, if any; a bad file is --config's error, later."""
    try:
        path = Path(value)
        text = safe_yaml.read_text(path, "--config") if path.is_file() else value
        loaded = safe_yaml.parse(text, f"--config {value!r}")
    except (ConfigError, OSError, ValueError):
        return None
    if not isinstance(loaded, dict):
        return None
    section = loaded.get("fit") if isinstance(loaded.get("fit"), dict) else loaded
    if "attack" not in section:
        return None
    return _choice_value(section["attack"])


def check_attack(choice: AttackChoice, cfg: Any, init: Any) -> dict[str, Any]:
    """The label mode (`--label_mode`, `--label_options.*`) and the attack built (their options checked;
    validate() needs the data, and comes with the run) by a throwaway attacker-side process, sealed as the run's
    attacker will be; the run's folders hidden as far as they exist. Returns the resolved attack: {key, source,
    plugin, params, config}."""
    from .attacker import sandbox as attacker_sandbox
    from .attacker.label_choice import LabelModeChoice
    from .attacker.launch import AttackerLink, keep_spare
    from .victim import default_cache_dir

    mode = LabelModeChoice.checked(cfg.label_mode, cfg.label_options or {})
    sandbox = attacker_sandbox.resolve(cfg.sandbox)  # no notice here: the run gives it
    roots = [getattr(d, "root", None) for d in (init.data, init.get("pool_data")) if d is not None]
    # the run creates these anyway: made now, the sandbox started here hides them and can run the attack; a
    # refused attack takes back what it made (a refused command leaves nothing behind)
    cache = Path(init.victim.cache_dir or default_cache_dir())
    made = _make_missing([Path(cfg.output_dir), *([cache] if init.victim.cache else [])])
    hide = attacker_sandbox.run_secret_paths(cache, bool(init.victim.cache), Path(cfg.output_dir), roots)
    timeout = getattr(getattr(init, "timeouts", None), "attack_setup", None)
    link = AttackerLink(sandbox, hide, timeout=timeout).start()
    try:
        link.label_mode(mode, 2)  # the mode's key and options (num_classes is the data's, known to the run)
        resolved = link.resolve(choice)
    except BaseException:
        link.close()
        for folder in reversed(made):
            try:
                folder.rmdir()  # only if still empty
            except OSError:
                pass
        raise
    keep_spare(link)  # the run of this command takes it over (runner._run_phases) instead of starting another
    return resolved


def _make_missing(folders: list[Path]) -> list[Path]:
    """Create the folders that do not exist (and their missing parents); returns what was created, parents first."""
    made: list[Path] = []
    for folder in folders:
        missing = [p for p in (folder, *folder.parents) if not p.exists()][::-1]
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue  # the run says what is wrong with it
        made += missing
    return made


__all__ = ["ATTACK_HELP", "check_attack", "split_attack_args"]
