"""CONTRIBUTING.md stays true: every hook documented with its exact signature, every interface field and
conformance rule named, and its example plugin really installs, loads and passes the conformance kit."""

from __future__ import annotations

import inspect
import re
import tomllib
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from stealbench import hookspecs
from stealbench.attacks import AttackContext
from stealbench.defenses import DefenseSetup
from stealbench.testing import (  # noqa: F401
    ATTACK_RULES, DEFENSE_RULES, REPRODUCTION_RULES, check_plugin, stealbench_distribution)

DOC = (Path(__file__).resolve().parents[1] / "CONTRIBUTING.md").read_text()
SPECS = {name: fn for name, fn in vars(hookspecs).items() if callable(fn) and hasattr(fn, "stealbench_spec")}


def code_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", DOC, flags=re.S)


def signature_line(name: str) -> str:
    sig = str(inspect.signature(SPECS[name])).replace("'", "")  # string annotations (from __future__ annotations)
    return f"def {name}{sig}"


def test_the_hookspecs_are_found():
    assert set(SPECS) == set(hookspecs.HOOK_KINDS) and SPECS


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_hook_is_documented_with_its_signature_and_an_example(name):
    assert f"### {name}\n" in DOC, f"CONTRIBUTING.md has no section '### {name}'"
    section = DOC.split(f"### {name}\n", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    assert signature_line(name) in section, f"CONTRIBUTING.md must show `{signature_line(name)}`"
    assert f"@stealbench.hookimpl\ndef {name}(register):" in section, f"no example implementation of {name}"


def test_no_documented_hook_is_missing_from_hookspecs():
    documented = set(re.findall(r"^### (register_\w+)$", DOC, flags=re.M))
    assert documented == set(SPECS)


@pytest.mark.parametrize("cls", [DefenseSetup, AttackContext])
def test_every_context_field_is_documented(cls):
    forms = ("`{}`", "`{}(", "`ctx.{}`")
    missing = [f.name for f in fields(cls) if not any(form.format(f.name) in DOC for form in forms)]
    assert not missing, f"CONTRIBUTING.md does not describe {cls.__name__} fields {missing}"


def test_every_conformance_rule_is_documented():
    missing = [rule for rule in {**DEFENSE_RULES, **ATTACK_RULES, **REPRODUCTION_RULES} if f"| `{rule}` |" not in DOC]
    assert not missing


def test_the_example_plugin_installs_and_passes_the_kit(stealbench_distribution):
    (source,) = [b for b in code_blocks("python") if b.startswith("# file: src/stealbench_smooth/__init__.py")]
    (pyproject,) = [tomllib.loads(b) for b in code_blocks("toml") if "[project.entry-points.stealbench]" in b]
    dist = pyproject["project"]["name"]
    entry_points = pyproject["project"]["entry-points"]["stealbench"]
    assert (dist, entry_points) == ("stealbench-smooth", {"smooth": "stealbench_smooth"})
    stealbench_distribution(dist, {"stealbench_smooth": source}, entry_points=entry_points,
                            version=pyproject["project"]["version"])
    assert check_plugin("smooth") == ["smooth"]


def test_the_architecture_and_dataset_examples_work():
    registered = {}
    for block in code_blocks("python"):
        if "def register_architectures(register)" in block or "def register_datasets(register)" in block:
            namespace: dict = {}
            exec("import stealbench\n" + block, namespace)  # noqa: S102 - our own documentation
            hook = namespace.get("register_architectures") or namespace["register_datasets"]
            hook(lambda key, obj, description="": registered.setdefault(key, obj))
    net = registered["tiny-mlp"](10, 1, 8)
    assert net(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    splits = registered["stripes"]().splits()
    assert splits.victim_x.shape[1:] == (1, 16, 16) and len(splits.eval_y) > 0
