"""`stealbench fit --help` and a mistyped `fit` option answer without importing the training stack.

Checked by the modules a fresh process imported, not by wall time (a noisy machine makes timings flaky): once the
parser's answers are stored (the first `fit` of an installed code), neither imports torch, Lightning, W&B or timm.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import REPO
from stealbench import fit_quick
from stealbench.testing import stealbench_distribution  # noqa: F401  (fixture)

HEAVY = ("torch", "lightning", "wandb", "timm", "torchvision", "torchmetrics", "scipy", "matplotlib", "jsonargparse")

#: runs the CLI in-process, then writes the top-level names of the imported modules to the file in argv[1]
PROBE = ("import json, sys\nfrom stealbench.cli import main\ncode = main(sys.argv[2:])\n"
         "open(sys.argv[1], 'w').write(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
         "sys.exit(code)\n")


def _env(tmp_path) -> dict[str, str]:
    env = {**os.environ, "STEALBENCH_CACHE_DIR": str(tmp_path / "cache"), "COLUMNS": "100",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("STEALBENCH_PLUGINS", None)
    return env


def _probe(tmp_path, *args: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    modules = tmp_path / "modules.json"
    proc = subprocess.run([sys.executable, "-c", PROBE, str(modules), *args], cwd=tmp_path, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    return proc, json.loads(modules.read_text()) if modules.exists() else []


def test_fit_help_and_a_mistyped_option_skip_the_training_stack(tmp_path):
    # the first call builds the LightningCLI parser (and stores its help text and option names)
    first = subprocess.run([sys.executable, "-m", "stealbench", "fit", "--help"], cwd=tmp_path, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    assert "--trainer.accelerator" in first.stdout and "--label_mode" in first.stdout

    again, modules = _probe(tmp_path, "fit", "--help")
    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout  # the same text, to the character
    assert not set(HEAVY) & set(modules), sorted(set(HEAVY) & set(modules))

    wrong, modules = _probe(tmp_path, "fit", "--defense", "deceptive", "--attack", "jbda", "--output_dri", "x")
    assert wrong.returncode == 2
    assert wrong.stderr.strip() == "error: unknown option --output_dri; did you mean --output_dir? " \
                                   "(see stealbench fit --help)"
    assert not set(HEAVY) & set(modules), sorted(set(HEAVY) & set(modules))


OPTIONS = {"--seed": None, "--output_dir": None, "--defense": None, "--progress_bar": None, "--print_config": "?",
           "--victim.epochs": None, "--trainer.devices": None, "--trainer.devices+": None, "-h": 0, "--help": 0}


@pytest.mark.parametrize("args,unknown", [
    (["--no_such_option", "1"], "--no_such_option"),
    (["--seed", "-1", "--defense", "deceptive", "--oops=3"], "--oops"),
    (["--attack", "jbda", "--attack.rounds", "2", "--nope"], "--nope"),
    (["--victim.epochs", "2"], None),
    (["--no_such_option", "--help"], None),  # help wins wherever it stands: the parser answers
    (["--defense.beta", "2", "--no_such_option"], None),  # a component's option: only the parser knows them
    (["--out", "runs"], None),  # an abbreviation jsonargparse may still expand
    (["--seed", "--no_such_option"], None),  # --seed lacks its value: the parser's message
    (["stray", "--no_such_option"], None),
    (["--print_config", "--no_such_option"], None),
    (["--no_such.option", "1"], None),
], ids=["plain", "after-values", "after-attack", "all-known", "help", "component-option", "abbreviation",
        "missing-value", "positional", "print-config", "dotted"])
def test_unknown_option_only_where_the_names_settle_it(args, unknown):
    assert fit_quick.unknown_option(args, OPTIONS) == unknown


def test_the_stored_answers_follow_the_plugin_switches_and_installed_plugins(monkeypatch, stealbench_distribution):
    before = fit_quick.fingerprint()
    monkeypatch.setenv("STEALBENCH_BLOCK_PLUGINS", "stealbench.defenses.edm")
    blocked = fit_quick.fingerprint()
    assert blocked != before
    stealbench_distribution("stealbench-startup", {"sbt_startup": "X = 1\n"}, entry_points={"startup": "sbt_startup"})
    assert fit_quick.fingerprint() not in (before, blocked)
