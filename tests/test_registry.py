"""Registries and the plugin manager: built-ins go through the hooks, errors are loud and helpful."""

import subprocess
import sys

import pytest

from stealbench.errors import DuplicateKeyError, StealbenchError, UnknownKeyError
from stealbench.plugins import ATTACK_PLUGINS, DEFAULT_PLUGINS, build_catalog
from stealbench.registry import Registry


def test_duplicate_key_names_both_sources():
    reg = Registry("defenses")
    reg.register("mine", object, source="plugin-a")
    with pytest.raises(DuplicateKeyError, match="plugin-a.*plugin-b"):
        reg.register("mine", object, source="plugin-b")


def test_unknown_key_lists_close_matches_and_points_at_list():
    reg = Registry("defenses")
    for key in ("deceptive", "none", "topk"):
        reg.register(key, object, source="x")
    with pytest.raises(UnknownKeyError) as info:
        reg.get("deceptiv")
    message = str(info.value)
    assert "deceptive" in message and "stealbench list defenses" in message


def test_keys_must_be_lowercase():
    with pytest.raises(StealbenchError, match="lowercase"):
        Registry("attacks").register("JBDA", object, source="x")


def test_builtins_register_through_the_hooks():
    catalog = build_catalog(attacks=True)
    assert {"none", "deceptive"} <= set(catalog.defenses)
    assert {"jbda", "random"} <= set(catalog.attacks)
    assert set(ATTACK_PLUGINS) <= {p.name for p in catalog.plugins}
    assert not build_catalog().attacks.entries()  # the defender's view: attacks by name only
    assert {"digits", "mnist", "fashion-mnist"} <= set(catalog.datasets)
    assert {"cnn", "mlp", "lenet5"} <= set(catalog.architectures)
    assert catalog.defenses.source("deceptive") == "stealbench.defenses.deceptive"
    names = {p.name for p in catalog.plugins}
    assert set(DEFAULT_PLUGINS) <= names
    deceptive = next(p for p in catalog.plugins if p.name == "stealbench.defenses.deceptive")
    assert deceptive.registered == {"defenses": ["deceptive"]}


def test_timm_names_resolve_as_architectures():
    catalog = build_catalog()
    assert callable(catalog.architectures.get("resnet18"))
    with pytest.raises(UnknownKeyError, match="resnet18"):
        catalog.architectures.get("resnet18x")


@pytest.mark.parametrize("args", [["--version"], ["list"], ["plugins"], ["list", "defenses"]])
def test_light_commands_do_not_import_lightning(args):
    code = ("import sys; from stealbench.cli import main; rc = main(%r); "
            "heavy = [m for m in ('lightning', 'torchmetrics', 'timm', 'wandb') if m in sys.modules]; "
            "assert rc == 0 and not heavy, heavy" % (args,))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_list_and_plugins_output(capsys):
    from stealbench.cli import main

    assert main(["list", "defenses"]) == 0
    out = capsys.readouterr().out
    assert "deceptive" in out and "Reverse sigmoid" in out
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "stealbench.defenses.deceptive" in out and "defenses: deceptive" in out
    assert main(["list", "defences"]) == 2
    assert "defenses" in capsys.readouterr().err
