"""The record belongs to the framework (issue 22, item 3): the attacker's messages follow a strict schema, framework
keys are written by the framework only, plugin reports live under their own prefix, the seed set is capped.
Each hostile plugin here changed the record before the fix."""

from __future__ import annotations

from pathlib import Path

import adversaries as adv
import pytest
import torch

from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
from stealbench.data.digits import Digits
from stealbench.defender import schema
from stealbench.defender.referee import AttackerFailed, Referee, seed_set_cap
from stealbench.defenses.base import Defense
from stealbench.defenses.none import NoDefense
from stealbench.errors import ConfigError, DefenseOutputError
from stealbench.runner import Experiment, run_experiment


def experiment(tmp_path: Path, attack, defense=None, name="run", **kw) -> Experiment:
    return Experiment(data=Digits(), defense=defense or NoDefense(), attack=attack,
                      keys={"data": "digits", "defense": "none", "attack": type(attack).__name__.lower()},
                      budget=80, victim=VictimConfig(epochs=3), surrogate=SurrogateConfig(),
                      wandb=WandbConfig(mode="disabled"), output_dir=str(tmp_path), name=name, **kw)


# ------------------------------------------------------------------------------------------------ forged messages
def test_a_forged_final_report_cannot_overwrite_measured_metrics(tmp_path, one_thread):
    results = run_experiment(experiment(tmp_path, adv.ForgedReportAttack()))
    assert results["metrics"]["queries"] == 1
    assert results["metrics"]["surrogate/acc"] < 0.5  # an untrained surrogate, as measured
    extras = results["extra_metrics"]
    assert not {"surrogate/acc", "surrogate/fidelity", "queries", "label_mode/kept"} & set(extras)
    assert extras["attack/surrogate/acc"] == 0.999 and extras["attack/label_mode/kept"] == 0.5  # the attack's claim


def test_a_forged_failure_is_the_attacks_not_the_defenses(tmp_path, one_thread):
    with pytest.raises(AttackerFailed, match=r"^attack 'forgedfailureattack' failed: DefenseOutputError") as info:
        run_experiment(experiment(tmp_path, adv.ForgedFailureAttack()))
    assert not isinstance(info.value, DefenseOutputError)
    assert "attack 'forgedfailureattack' failed" in (tmp_path / "run" / "error.txt").read_text()


def test_a_checkpoint_with_a_bad_round_is_refused_in_one_line(tmp_path, monkeypatch, one_thread):
    report = tmp_path / "got.txt"
    monkeypatch.setenv("ADVERSARY_REPORT", str(report))
    results = run_experiment(experiment(tmp_path, adv.BadRoundAttack(), sandbox="off"))  # it reports through a file
    malformed = "ProtocolError: the attacker's process sent a malformed 'checkpoint' request: "
    assert report.read_text().splitlines() == [
        malformed + "round must be an integer >= 1 (rounds count from 1), got 'abc'",
        malformed + "round must be an integer >= 1 (rounds count from 1), got 0",
        "ProtocolError: ctx.checkpoint: round 1 after round 1; rounds count from 1 and increase with every "
        "checkpoint"]
    assert [p["round"] for p in results["curve"]] == [1]


class FakeConn:
    def __init__(self, messages):
        from stealbench.transport import encode

        self.inbox = [encode(m) for m in messages]
        self.sent = []

    def poll(self, timeout):
        return bool(self.inbox)

    def recv_bytes(self):
        return self.inbox.pop(0)

    def send_bytes(self, data):
        from stealbench.transport import decode

        self.sent.append(decode(data))


class Alive:
    exitcode = None

    def is_alive(self):
        return True


def referee(logs=None, pool=451):
    from helpers import SHAPE, tiny_net

    from stealbench.defender.oracle import Oracle

    oracle = Oracle(tiny_net(), NoDefense(), budget=10, input_shape=SHAPE, num_classes=10)
    return Referee(oracle=oracle, pool_x=torch.rand(pool, *SHAPE), pool_truth=torch.arange(pool) % 10,
                   pool_labels=None, evaluate=lambda state: {},
                   seed_generator=torch.Generator().manual_seed(0), on_point=lambda p: None,
                   on_log=lambda m, s: logs.append((m, s)) if logs is not None else None, say=lambda t: None,
                   attack_name="'hostile'")


DONE = ("done", None, {"label_mode": {}, "environment": {}})


def test_relayed_log_lines_land_under_attack_and_finite_only():
    logs = []
    conn = FakeConn([("notify", "log", {"metrics": {"surrogate/acc": 0.999, "attack/x": 1, "loss": float("nan")},
                                        "step": 3}), DONE])
    referee(logs).serve(conn, Alive())
    assert logs == [({"attack/surrogate/acc": 0.999, "attack/x": 1.0}, 3)]


@pytest.mark.parametrize("message,rule", [
    (("notify", "log", {"metrics": {"a": "text"}}), "metrics must be a mapping of names to numbers"),
    (("notify", "log", {"metrics": {}, "step": -1}), "step must be a non-negative integer"),
    (("notify", "say", {"text": "hi", "colour": "red"}), "unknown field(s) 'colour'"),
    (("notify", "shout", {}), "unknown op 'shout'"),
    (("teleport", None, {}), "unknown kind 'teleport'"),
    (("done", None, {"label_mode": {"kept": "all"}, "environment": {}}), "figures must be finite numbers"),
    (("done", None, {"label_mode": {"kept": float("inf")}, "environment": {}}), "figures must be finite numbers"),
    (("done", None, {"label_mode": {}}), "missing field(s) 'environment'"),
    (("failed", None, {"type": 3, "module": "m", "message": "x"}), "type must be text"),
])
def test_malformed_one_way_messages_end_the_run_as_the_attacks_fault(message, rule):
    with pytest.raises(AttackerFailed, match=r"^attack 'hostile' broke rule \[protocol\]: ") as info:
        referee().serve(FakeConn([message, DONE]), Alive())
    assert rule in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("args,rule", [
    ({"state": {}, "round": 1, "retrained": True}, "state must be a non-empty mapping"),
    ({"state": {"w": torch.zeros(1)}, "round": "abc", "retrained": True}, "round must be an integer >= 1"),
    ({"state": {"w": torch.zeros(1)}, "round": -1, "retrained": True}, "round must be an integer >= 1"),
    ({"state": {"w": torch.zeros(1)}, "round": True, "retrained": True}, "round must be an integer >= 1"),
    ({"state": {"w": torch.zeros(1)}, "round": 0, "retrained": True}, "round must be an integer >= 1"),
    ({"state": {"w": torch.zeros(1)}, "round": 1, "retrained": "yes"}, "retrained must be true or false"),
    ({"state": {"w": torch.zeros(1)}, "round": 1}, "missing field(s) 'retrained'"),
])
def test_malformed_requests_are_answered_with_an_error_the_attack_may_catch(args, rule):
    conn = FakeConn([("call", "checkpoint", args), DONE])
    referee().serve(conn, Alive())
    kind, payload = conn.sent[0]
    assert kind == "error" and payload["type"] == "ProtocolError" and rule in payload["message"]


def test_unknown_requests_are_refused():
    conn = FakeConn([("call", "victim_weights", {}), ("call", "seed_set", {"per_class": 2.5}), DONE])
    referee().serve(conn, Alive())
    assert "unknown op 'victim_weights'" in conn.sent[0][1]["message"]
    assert "per_class must be an integer" in conn.sent[1][1]["message"]


# ------------------------------------------------------------------------------------------------ the seed set
def test_the_seed_set_is_capped_per_class_and_as_a_share_of_the_pool():
    assert seed_set_cap(451, 10) == 11  # a quarter of the digits pool
    assert seed_set_cap(100_000, 10) == 50  # MAX_SEED_PER_CLASS
    ref = referee(pool=451)
    with pytest.raises(ConfigError, match=r"takes 1\.\.11 images per class on this pool .*got 50"):
        ref.seed_set(50)
    assert len(ref.seed_set(11)["x"]) == 110


def test_a_greedy_seed_set_is_refused_and_the_size_is_recorded(tmp_path, monkeypatch, one_thread):
    report = tmp_path / "got.txt"
    monkeypatch.setenv("ADVERSARY_REPORT", str(report))
    results = run_experiment(experiment(tmp_path, adv.GreedySeedSetAttack(), sandbox="off"))  # it reports through a file
    assert report.read_text().startswith("ConfigError: ctx.seed_set(per_class) takes 1..")
    assert results["seed_set"]["size"] == 20 and results["extra_metrics"]["seed_set/size"] == 20


# ------------------------------------------------------------------------------------------------ defense reports
class ClaimsNoCost(Defense):
    """Flips every answer, and reports that it changed nothing."""

    def forward(self, x, probs):
        return probs.flip(-1)

    def report(self):
        return {"top1_changed": 0.0, "defense/kl_nats": 0.0, "alarm": 1}


def test_a_defense_report_lives_under_its_own_prefix(tmp_path, one_thread):
    results = run_experiment(experiment(tmp_path, adv.InPlaceDefenseProbe(), ClaimsNoCost()))
    assert results["metrics"]["defense/top1_changed"] > 0.5  # measured
    assert {k: v for k, v in results["extra_metrics"].items() if k.startswith("defense/")} == {
        "defense/report/top1_changed": 0.0, "defense/report/kl_nats": 0.0, "defense/report/alarm": 1.0}


class Reports(Defense):
    def __init__(self, value):
        super().__init__()
        self.value = value

    def forward(self, x, probs):
        return probs

    def report(self):
        return {"figure": self.value}


@pytest.mark.parametrize("value", [float("nan"), "high", {"nested": 1.0}, True])
def test_a_defense_report_holds_finite_numbers_only(value):
    from stealbench.defender.guard import checked_report

    with pytest.raises(DefenseOutputError, match=r"^defense 'r' broke rule \[report\]: it reported 'figure' = "):
        checked_report(Reports(value), "'r'")


def test_framework_prefixes_are_not_attack_keys():
    assert schema.attack_key("surrogate/acc") == "attack/surrogate/acc"
    assert schema.attack_key("attack/own") == "attack/own"
