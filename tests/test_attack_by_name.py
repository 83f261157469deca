"""The defender never runs attacker code: it knows attacks by name and options only.

An attack plugin's module is imported, its class constructed and validated only in attacker-side processes (the
one that checks options at parse time, which then runs the attack, or a throwaway one); the defender's process (here,
the test process running `stealbench fit` in-process) gets plain data back. A hostile plugin records the process
id of each of its steps; none may be the defender's."""

import json
import os
import subprocess
import sys

import pytest

from stealbench.cli import main
from stealbench.errors import PluginError
from stealbench.testing import stealbench_distribution  # noqa: F401  (fixture)

from helpers import RECORD_PRELUDE, install_recorder, recorded_steps

HOSTILE = RECORD_PRELUDE + '''
import torch
from stealbench import hookimpl
from stealbench.attacks import Attack
from stealbench.errors import ConfigError


class Recorder(Attack):
    """Random pool images, one round; records where each of its steps ran."""

    def __init__(self, epochs: int = 1, min_budget: int = 1, hang: bool = False):
        record("init")
        self.epochs, self.min_budget, self.hang = epochs, min_budget, hang

    def validate(self, *, budget, num_classes, pool_size):
        record("validate")
        if self.hang:  # a plugin that never returns from validate()
            import time
            time.sleep(3600)
        if budget < self.min_budget:
            raise ConfigError(f"attack.min_budget: recorder needs {self.min_budget} queries, the budget is {budget}")

    def __getstate__(self):
        record("getstate")
        return dict(self.__dict__)

    def run(self, ctx):
        net = ctx.new_surrogate()
        x = ctx.pool_x[: ctx.oracle.remaining]
        net = ctx.train(net, x, ctx.to_targets(ctx.oracle.query(x)), self.epochs)
        ctx.checkpoint(net, 1, True)
        return net


@hookimpl
def register_attacks(register):
    register("recorder", Recorder)
'''


def _install(tmp_path, stealbench_distribution):
    return install_recorder(tmp_path, stealbench_distribution, "stealbench-recorder", "sb_recorder", HOSTILE)


_steps = recorded_steps


FIT = ["fit", "--data", "digits", "--victim.epochs", "1", "--budget", "20", "--progress_bar", "false"]


@pytest.mark.parametrize("sandbox", ["off", "auto"])
def test_a_hostile_attack_plugin_never_runs_in_the_defenders_process(tmp_path, stealbench_distribution,
                                                                       one_thread, sandbox):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, "--attack", "recorder", "--attack.epochs", "1", "--sandbox", sandbox,
                 "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    assert results["identity"]["attack"] == "recorder"
    assert results["config"]["attack"] == {"class_path": "sb_recorder.Recorder",
                                           "init_args": {"epochs": 1, "min_budget": 1, "hang": False}}
    assert results["versions"]["plugins"]["recorder"] == "0.1.0"  # the attack's plugin, as its side loaded it
    assert "sb_recorder" not in sys.modules, "the defender's process imported the attack's module"
    steps = _steps(tmp_path)
    assert all(os.getpid() not in pids for pids in steps.values()), f"attack code ran in the defender: {steps}"
    assert "getstate" not in steps  # nothing pickles the attack: it is built where it runs
    if results["sealed"] == "os-sandbox":
        return  # the attacker ran in bubblewrap and could write nothing here: no record to read
    # it did run: imported and built to check its options, then built again and validated, in the same attacker
    # process (the one that checked the options runs the attack: attacker/launch.py, keep_spare)
    assert {"import", "init", "validate"} <= set(steps), steps
    assert len(steps["import"]) == 1 and steps["validate"] == steps["import"] == steps["init"]


@pytest.mark.parametrize("args,expected", [
    (["--attack.epochs", "abc"], ["--attack.epochs", "integer", "'abc'"]),
    (["--attack.foo", "1"], ["--attack.foo", "not an option of recorder"]),
    (["--attack", "recordr"], ["unknown attack 'recordr'", "recorder"]),
], ids=["not-a-number", "unknown-option", "unknown-attack"])
def test_an_attack_option_error_is_one_line_before_any_training(tmp_path, stealbench_distribution, capsys,
                                                                  args, expected):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, "--attack", "recorder", *args, "--sandbox", "off", "--output_dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and all(e in err for e in expected), err
    assert "Traceback" not in err and "victim" not in out
    assert not (tmp_path / "runs").exists()
    assert all(os.getpid() not in pids for pids in _steps(tmp_path).values())


def test_a_refused_validate_ends_the_run_before_the_victim_trains(tmp_path, stealbench_distribution, capsys):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, "--attack", "recorder", "--attack.min_budget", "50", "--sandbox", "off",
                 "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.strip() == "error: attack.min_budget: recorder needs 50 queries, the budget is 20", err
    assert "victim trained" not in out and "victim loaded" not in out
    assert not (tmp_path / "runs" / "r" / "results.json").exists()
    assert os.getpid() not in _steps(tmp_path).get("validate", {os.getpid()})


def test_an_attack_that_hangs_in_validate_ends_the_run_at_its_timeout(tmp_path, stealbench_distribution, capsys):
    import time

    _install(tmp_path, stealbench_distribution)
    started = time.monotonic()
    code = main([*FIT, "--attack", "recorder", "--attack.hang", "true", "--timeouts.attack_setup", "2",
                 "--sandbox", "off", "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    out, err = capsys.readouterr()
    assert code != 0 and time.monotonic() - started < 120
    assert "did not answer within 2 s while building attack 'recorder'" in err and "Traceback" not in err, err
    assert "--timeouts.attack_setup" in err
    assert "victim trained" not in out and "victim loaded" not in out
    assert not (tmp_path / "runs" / "r" / "results.json").exists()


def test_an_attack_registered_from_the_defenders_group_is_refused(stealbench_distribution):
    from stealbench.plugins import get_catalog

    source = HOSTILE.replace("{report!r}", "'/dev/null'").replace('with open(f"{REPORT}', 'with open(f"/dev/null')
    source = source.replace('record("import")', "")
    stealbench_distribution("stealbench-mixed", {"sb_mixed": source}, entry_points={"mixed": "sb_mixed"})
    with pytest.raises(PluginError, match="'mixed'.*register_attacks.*stealbench.attacks"):
        get_catalog()


def test_the_defenders_catalogue_imports_no_attack_module():
    code = ("import sys\nfrom stealbench.plugins import get_catalog\nimport stealbench.lightning_cli\n"
            "import stealbench.runner\nc = get_catalog()\n"
            "print(sorted(m for m in sys.modules if m.startswith('stealbench.attacks.') and m != 'stealbench.attacks.base'),"
            " len(c.attacks), len(get_catalog(attacks=True).attacks))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "0" and int(out[2]) >= 5, out


def test_print_config_and_help_come_from_the_attackers_side(tmp_path, stealbench_distribution, capsys):
    import yaml

    _install(tmp_path, stealbench_distribution)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--attack", "recorder", "--attack.epochs", "3", "--sandbox", "off", "--print_config"])
    assert info.value.code == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["attack"] == {"class_path": "sb_recorder.Recorder", "init_args": {"epochs": 3, "min_budget": 1, "hang": False}}
    with pytest.raises(SystemExit):
        main(["fit", "--attack.help", "recorder"])
    assert "--attack.min_budget" in capsys.readouterr().out
    assert "sb_recorder" not in sys.modules
    assert all(os.getpid() not in pids for pids in _steps(tmp_path).values())


def test_a_grid_naming_an_unknown_attack_fails_before_its_runs(tmp_path):
    from stealbench.errors import ConfigError
    from stealbench.grid import check_keys, expand

    runs = expand({"data": ["digits"], "defenses": ["none"], "attacks": ["random", "jbdaa"], "budgets": [50]},
                  name="g", output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="grid: unknown attack 'jbdaa'.*jbda"):
        check_keys(runs)
