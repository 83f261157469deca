"""The defender never runs attacker code: it knows label modes by name and options only, as it knows attacks.

A label-mode plugin (entry-point group `stealbench.attacks`) is imported, its options checked and the mode built
only on the attacker's side (the process that checks options at parse time and then runs the attack, or a
grid's look-up); the defender's process (here, the test process running `stealbench fit` in-process)
gets plain data back, checked by a strict schema. A hostile mode records the process id of each of its steps;
none may be the defender's."""

import json
import os
import subprocess
import sys

import pytest

from stealbench.cli import main
from stealbench.errors import PluginError, ProtocolError
from stealbench.testing import stealbench_distribution  # noqa: F401  (fixture)

from helpers import RECORD_PRELUDE, install_recorder, recorded_steps

HOSTILE = RECORD_PRELUDE + '''
import dataclasses

from stealbench import hookimpl
from stealbench.attacker.label_modes import LabelMode
from stealbench.attacker.label_modes.base import check_number


@dataclasses.dataclass
class Options:
    k: int = 2
    claim: int = 0  # the budget it claims the attack has (0: the real one)
    hang: bool = False

    def __post_init__(self):
        record("options")
        check_number("k", self.k, minimum=1, integer=True)


class Recorder(LabelMode):
    """hard labels; records where each of its steps ran"""

    answers = ("noise",)
    Options = Options
    then = "hard"

    def __init__(self, num_classes, options=None):
        record("init")
        super().__init__(num_classes, options)
        if self.options.hang:  # a plugin that never returns from __init__
            import time
            time.sleep(3600)

    def effective_budget(self, budget):
        record("budget")
        return self.options.claim or budget

    def __getstate__(self):
        record("getstate")
        return dict(self.__dict__)

    def report(self):
        return {"kept": 1.0}


@hookimpl
def register_label_modes(register):
    register("recorder", Recorder)
'''


def _install(tmp_path, stealbench_distribution):
    return install_recorder(tmp_path, stealbench_distribution, "stealbench-lmrecorder", "sb_lmrecorder", HOSTILE)


_steps = recorded_steps


FIT = ["fit", "--data", "digits", "--victim.epochs", "1", "--budget", "20", "--progress_bar", "false",
       "--attack", "random", "--attack.epochs", "1", "--sandbox", "off", "--label_mode", "recorder"]


def test_a_hostile_label_mode_never_runs_in_the_defenders_process(tmp_path, stealbench_distribution, one_thread):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, "--label_options.k", "3", "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    assert results["identity"]["label_mode"] == "recorder-k3" and results["identity"]["label_mode_key"] == "recorder"
    assert results["identity"]["label_options"] == {"k": 3}
    assert results["versions"]["plugins"]["lmrecorder"] == "0.1.0"  # the mode's plugin, as its side loaded it
    assert results["extra_metrics"]["attack/kept"] == 1.0  # its report: the attacker's figure, under attack/
    assert results["metrics"]["queries"] == 20
    assert "sb_lmrecorder" not in sys.modules, "the defender's process imported the label mode's module"
    steps = _steps(tmp_path)
    assert all(os.getpid() not in pids for pids in steps.values()), f"label-mode code ran in the defender: {steps}"
    assert "getstate" not in steps  # nothing pickles the mode: it is built where it runs
    # imported and built to check its options, then built again (and asked its budget) by the same attacker process
    assert {"import", "options", "init", "budget"} <= set(steps), steps
    assert len(steps["import"]) == 1 and steps["budget"] == steps["import"]


@pytest.mark.parametrize("args,expected", [
    (["--label_options.k", "0"], "error: --label_options.k must be an integer >= 1, got 0"),
    (["--label_options.kk", "1"], "error: --label_options.kk do not apply to label_mode 'recorder' (it reads: "
                                  "claim, hang, k)"),
    (["--label_mode", "recordr"], "unknown label_mode 'recordr'"),
], ids=["bad-value", "unknown-option", "unknown-mode"])
def test_a_label_option_error_is_one_line_before_any_training(tmp_path, stealbench_distribution, capsys,
                                                                args, expected):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, *args, "--output_dir", str(tmp_path / "runs")])
    out, err = capsys.readouterr()
    assert code == 2
    assert err.count("\n") == 1 and expected in err, err
    assert "Traceback" not in err and "victim" not in out
    assert not (tmp_path / "runs").exists()
    assert all(os.getpid() not in pids for pids in _steps(tmp_path).values())


def test_a_label_mode_that_hangs_ends_the_run_at_its_timeout(tmp_path, stealbench_distribution, capsys):
    import time

    _install(tmp_path, stealbench_distribution)
    started = time.monotonic()
    code = main([*FIT, "--label_options.hang", "true", "--timeouts.attack_setup", "5",
                 "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    out, err = capsys.readouterr()
    assert code != 0 and time.monotonic() - started < 120
    assert "did not answer within 5 s while building label mode 'recorder'" in err and "Traceback" not in err, err
    assert "--timeouts.attack_setup" in err and "victim" not in out


def test_a_label_mode_claiming_more_budget_than_the_run_has_is_refused(tmp_path, stealbench_distribution, capsys):
    _install(tmp_path, stealbench_distribution)
    code = main([*FIT, "--label_options.claim", "1000000", "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    out, err = capsys.readouterr()
    assert code != 0
    assert "effective_budget must be an integer from 0 to the budget 20, got 1000000" in err, err
    assert "victim trained" not in out and not (tmp_path / "runs" / "r" / "results.json").exists()


def test_a_label_mode_registered_from_the_defenders_group_is_refused(stealbench_distribution):
    from stealbench.plugins import get_catalog

    source = HOSTILE.replace("{report!r}", "'/dev/null'").replace('with open(f"{REPORT}', 'with open(f"/dev/null')
    source = source.replace('record("import")', "")
    stealbench_distribution("stealbench-lmmixed", {"sb_lmmixed": source}, entry_points={"lmmixed": "sb_lmmixed"})
    with pytest.raises(PluginError, match="'lmmixed'.*register_label_modes.*stealbench.attacks"):
        get_catalog()


def test_the_defenders_catalogue_imports_no_label_mode_module():
    code = ("import sys\nfrom stealbench.plugins import get_catalog\nimport stealbench.lightning_cli\n"
            "import stealbench.runner, stealbench.grid\nc = get_catalog()\n"
            "mods = ('plain', 'smooth', 'invert', 'ddae', 'adaptive', 'estimate', 'reverse_sigmoid')\n"
            "print(sorted(m for m in sys.modules if m.rpartition('.')[2] in mods and 'label_modes' in m),"
            " len(c.label_modes), len(get_catalog(attacks=True).label_modes))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "[]" and out[1] == "0" and int(out[2]) >= 5, out


def test_a_grid_asks_the_attackers_side_which_defenses_a_mode_answers(tmp_path, stealbench_distribution):
    from stealbench.errors import ConfigError
    from stealbench.grid import expand

    _install(tmp_path, stealbench_distribution)
    spec = {"data": ["digits"], "defenses": ["none", "noise", "deceptive"], "attacks": ["random"], "budgets": [50],
            "label_modes": ["soft", {"mode": "recorder", "k": 2}]}
    runs = expand(spec, name="g", output_dir=str(tmp_path))
    cells = {(r.identity["label_mode"], r.identity["defense"]) for r in runs}
    assert cells == {("soft", "none"), ("soft", "noise"), ("soft", "deceptive"), ("recorder-k2", "none"),
                     ("recorder-k2", "noise")}  # recorder answers noise only (and every mode runs undefended)
    with pytest.raises(ConfigError, match=r"entry \{'mode': 'recorder', 'k': 0\}: --label_options.k must be"):
        expand({**spec, "label_modes": [{"mode": "recorder", "k": 0}]}, name="g", output_dir=str(tmp_path))
    assert "sb_lmrecorder" not in sys.modules
    assert all(os.getpid() not in pids for pids in _steps(tmp_path).values())


def test_the_label_mode_handshake_answer_is_checked():
    from stealbench.defender.schema import check_label_mode

    good = {"key": "m", "source": None, "plugin": {}, "answers": "all", "effective_budget": 10}
    assert check_label_mode(good, "m", 10)["effective_budget"] == 10
    assert check_label_mode({**good, "effective_budget": None}, "m", None)["answers"] == "all"
    for bad, budget, message in [
        ({**good, "key": "other"}, 10, "not the label mode 'm'"),
        ({**good, "effective_budget": 11}, 10, "from 0 to the budget 10"),
        ({**good, "effective_budget": True}, 10, "from 0 to the budget"),
        ({**good, "effective_budget": 5}, None, "must be null"),
        ({**good, "answers": [1]}, 10, "answers must be"),
        ({**good, "plugin": {"a": 1}}, 10, "plugin must map"),
        ({**good, "extra": 1}, 10, "unknown field"),
        ([good], 10, "not a mapping"),
    ]:
        with pytest.raises(ProtocolError, match=message):
            check_label_mode(bad, "m", budget)


@pytest.mark.parametrize("key,options,message", [
    (3, {}, "--label_mode expects"),
    ("soft", [1], "--label_options must be a mapping"),
    ("soft", {"k": object()}, "--label_options.k must be plain data"),
    ("soft", {"k": float("nan")}, "--label_options.k must be plain data"),
])
def test_the_defender_checks_a_label_modes_shape_only(key, options, message):
    from stealbench.attacker.label_choice import LabelModeChoice
    from stealbench.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        LabelModeChoice.checked(key, options)
    assert LabelModeChoice.checked("anything", {"k": [1, {"a": None}]}).as_data() == {
        "key": "anything", "options": {"k": [1, {"a": None}]}}


def test_the_attacks_own_description_is_checked_like_any_attacker_message():
    from stealbench.defender.schema import check_attack_description
    from stealbench.errors import ProtocolError

    good = {"key": "jbda", "source": None, "plugin": {}, "params": "rounds=2",
            "config": {"class_path": "stealbench.attacks.jbda.JBDA", "init_args": {"rounds": 2}}, "needs_pool": True}
    assert check_attack_description(good, "jbda") == good
    assert check_attack_description(dict(good), "stealbench.attacks.jbda.JBDA")["key"] == "jbda"  # a class path
    for forged in ({**good, "key": "random"}, {**good, "needs_pool": "no"}, {**good, "budget": 10 ** 6},
                   {**good, "config": {"class_path": "x", "init_args": [1]}}, {**good, "plugin": {"a": 1}},
                   {**good, "params": ["rounds"]}):
        with pytest.raises(ProtocolError):
            check_attack_description(forged, "jbda")
