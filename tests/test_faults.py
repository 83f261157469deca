"""Faults end cleanly (issue 22, item 4): threads querying at once, NaN outputs, plugins that raise or return the
wrong thing, a defense that changes the victim: one line naming the plugin and the rule, never a hang."""

from __future__ import annotations

import adversaries as adv
import pytest
import torch
from test_record import experiment
from torch import nn

from stealbench.defender.referee import AttackerFailed
from stealbench.errors import DefenseOutputError, PluginError
from stealbench.models.factory import build_net
from stealbench.runner import run_experiment


def test_four_threads_querying_at_once_finish(tmp_path, one_thread):
    results = run_experiment(experiment(tmp_path, adv.ThreadedAttack()))
    assert results["metrics"]["queries"] == 42


def test_a_nan_surrogate_ends_the_run_as_failed(tmp_path, one_thread):
    with pytest.raises(AttackerFailed, match=r"^attack 'nansurrogateattack' broke rule \[finite-surrogate\]"):
        run_experiment(experiment(tmp_path, adv.NaNSurrogateAttack()))
    assert not (tmp_path / "run" / "results.json").exists()


@pytest.mark.parametrize("defense,rule,words", [
    (adv.RaisingDefense(), "answers", "raised RuntimeError: boom"),
    (adv.TupleDefense(), "shape-dtype-device", "returned tuple, not a torch.Tensor"),
    (adv.FiveClassDefense(), "shape-dtype-device", ", 5), expected ("),
    (adv.NaNDefense(), "simplex", "NaN"),
    (adv.VictimTamperer(), "victim-unchanged", "setup() changed the victim's weights"),
])
def test_a_broken_defense_is_one_line_naming_it_and_the_rule(tmp_path, defense, rule, words, one_thread):
    with pytest.raises(DefenseOutputError) as info:
        run_experiment(experiment(tmp_path, adv.InPlaceDefenseProbe(), defense))
    message = str(info.value)
    assert message.startswith("defense 'none'") and f"broke rule [{rule}]" in message and words in message
    assert "\n" not in message


def test_a_defense_that_is_not_a_module_is_named(tmp_path, one_thread):
    with pytest.raises(DefenseOutputError, match=r"broke rule \[defense-type\]: it is a str"):
        run_experiment(experiment(tmp_path, adv.InPlaceDefenseProbe(), "noise"))


class _Archs:
    def __init__(self, make):
        self.make = make

    def get(self, key):
        return self.make

    def source(self, key):
        return "tests"


class _Catalog:
    def __init__(self, make):
        self.architectures = _Archs(make)


class Tuple(nn.Module):
    def __init__(self, k):
        super().__init__()
        self.fc = nn.Linear(64, k)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y, y


def _raise(*args):
    raise ValueError("no such layer")


@pytest.mark.parametrize("make,rule,words", [
    (_raise, "build", "raised ValueError when built: no such layer"),
    (lambda k, c, h: "a net", "module", "built a str, not a torch nn.Module"),
    (lambda k, c, h: Tuple(k), "logits", "returned a tuple"),
    (lambda k, c, h: nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), "num-classes", "shape (2, 3)"),
    (lambda k, c, h: nn.Sequential(nn.Flatten(), nn.Linear(5, k)), "forward", "raised RuntimeError"),
])
def test_a_broken_architecture_is_one_line_naming_it_and_the_rule(make, rule, words):
    with pytest.raises(PluginError) as info:
        build_net("bad", num_classes=10, input_shape=(1, 8, 8), mean=(0.5,), std=(0.5,), catalog=_Catalog(make))
    message = str(info.value)
    assert message.startswith(f"architecture 'bad' (plugin tests) broke rule [{rule}]") and words in message
    assert "\n" not in message


def test_a_working_architecture_is_left_as_built():
    net = build_net("ok", num_classes=10, input_shape=(1, 8, 8), mean=(0.5,), std=(0.5,),
                    catalog=_Catalog(lambda k, c, h: nn.Sequential(nn.Flatten(), nn.Dropout(), nn.Linear(64, k))))
    assert net.training and net(torch.zeros(3, 1, 8, 8)).shape == (3, 10)


# ------------------------------------------------------------------------------------------------ timeouts, signals
from stealbench.config import Timeouts  # noqa: E402


def test_an_attack_that_never_ends_meets_the_attack_timeout(tmp_path, one_thread):
    import time

    started = time.monotonic()
    with pytest.raises(AttackerFailed, match=r"^attack 'sleepingattack' broke rule \[timeout\]: .*timeouts.attack"):
        run_experiment(experiment(tmp_path, adv.SleepingAttack(), timeouts=Timeouts(attack=3)))
    assert time.monotonic() - started < 60  # the process ignoring SIGTERM was killed, not waited for


@pytest.mark.parametrize("where,option", [("setup", "defense_setup"), ("forward", "answer")])
def test_a_defense_that_sleeps_forever_meets_its_timeout(tmp_path, where, option, one_thread):
    timeouts = Timeouts(**{option: 2})
    with pytest.raises(DefenseOutputError, match=rf"^defense 'none'.* broke rule \[timeout\]: .*timeouts.{option}"):
        run_experiment(experiment(tmp_path, adv.InPlaceDefenseProbe(), adv.SleepingDefense(where),
                                  timeouts=timeouts))
    assert "timeout" in (tmp_path / "run" / "error.txt").read_text()


def test_timeouts_are_checked():
    from stealbench.errors import ConfigError

    with pytest.raises(ConfigError, match=r"--timeouts.attack must be a finite number > 0"):
        Timeouts(attack=0)


def test_timeouts_are_fit_options(capsys):
    from stealbench.cli import main

    assert main(["fit", "--timeouts.attack", "-5"]) == 2
    assert "--timeouts.attack must be a finite number > 0, got -5.0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as done:  # jsonargparse prints the config and exits
        main(["fit", "--timeouts.answer", "60", "--print_config"])
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "answer: 60.0" in printed and "attack: 172800.0" in printed


_SLEEPER = """
import sys
sys.path.insert(0, {tests!r})
from pathlib import Path
import adversaries as adv
from stealbench.signals import handle_signals, exit_code
from stealbench.runner import run_experiment
from test_record import experiment
try:
    with handle_signals():
        run_experiment(experiment(Path({out!r}), adv.{attack}(), adv.SleepingDefense("forward")))
except BaseException as exc:
    sys.exit(exit_code(exc) or 1)
"""


@pytest.mark.parametrize("attack", ["InPlaceDefenseProbe"])
def test_sigterm_ends_a_run_whose_defense_swallows_it_within_seconds(tmp_path, attack):
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    tests = str(Path(__file__).parent)
    code = _SLEEPER.format(tests=tests, out=str(tmp_path), attack=attack)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(tests).parent), tests])}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    for line in proc.stdout:  # until the defense sleeps on the attacker's query
        lines.append(line)
        if "defense: sleeping" in line:
            break
    else:
        pytest.fail("".join(lines)[-2000:])
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert time.monotonic() - started < 15  # the watchdog's grace, not forever


# ------------------------------------------------------------------------------------------------ benign users
def test_a_defense_cannot_tell_the_benign_evaluation_from_the_attacker(tmp_path, one_thread):
    """EvalDetector answered the evaluation (a copy of itself) truthfully and the attacker uniformly: utility
    read 'unchanged' while the attacker learnt nothing. Now both go through the same instance, mixed."""
    results = run_experiment(experiment(tmp_path, adv.InPlaceDefenseProbe(), adv.EvalDetector()))
    metrics = results["metrics"]
    assert metrics["defense/top1_changed"] > 0.5  # the uniform answers benign users got too
    assert metrics["victim/acc_defended"] < 0.3 < metrics["victim/acc"]


def test_benign_images_share_the_attackers_batches_in_a_seeded_order():
    from helpers import SHAPE, tiny_net

    from stealbench.defender.oracle import Oracle
    from stealbench.defenses.none import NoDefense

    seen = []

    class Rec(NoDefense):
        def forward(self, x, probs):
            seen.append(len(x))
            return probs

    benign = torch.rand(30, *SHAPE)
    oracle = Oracle(tiny_net(), Rec(), budget=60, input_shape=SHAPE, num_classes=10, benign_x=benign,
                    benign_generator=torch.Generator().manual_seed(0))
    x = torch.rand(20, *SHAPE)
    released = oracle.query(x)
    assert seen == [30] and oracle.used == 20  # 20 attacker images with the 10 benign ones due by then
    assert torch.allclose(released, torch.softmax(tiny_net()(x), -1), atol=1e-6)  # its own rows, in order
    clean, out, log = oracle.benign_answers()
    assert seen == [30, 20] and torch.allclose(clean, torch.softmax(tiny_net()(benign), -1), atol=1e-6)
    assert torch.equal(out, clean) and log.dtype == torch.float64
