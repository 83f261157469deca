"""Fair and sealed comparisons (issue 8): paired randomness, the attacker's own process, guarded defenses, no
ground truth for attackers. Every test here failed on the code before the two-process split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from adversaries import InPlaceDefenseProbe, SnoopingAttack
from stealbench.cli import main
from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
from stealbench.data.digits import Digits
from stealbench.defenses.base import Defense
from stealbench.defenses.none import NoDefense
from stealbench.errors import DefenseOutputError
from stealbench.runner import Experiment, run_experiment
from stealbench.seeding import role_seed

VICTIM = ["--victim.epochs", "3"]
#: small settings per built-in attack: a few rounds, one epoch each
ATTACKS = {
    "jbda": ["--attack.seed_per_class", "2", "--attack.rounds", "3", "--attack.epochs_per_round", "1"],
    "jbda-topk": ["--attack.seed_per_class", "2", "--attack.rounds", "2", "--attack.epochs_per_round", "1",
                  "--attack.k", "2"],
    "t-rnd": ["--attack.seed_per_class", "2", "--attack.rounds", "3", "--attack.epochs_per_round", "1"],
    "random": ["--attack.num_checkpoints", "2", "--attack.epochs", "1"],
    "knockoff": ["--attack.policy", "adaptive", "--attack.num_checkpoints", "2", "--attack.epochs", "1",
                 "--attack.batch_size", "20"],
    "activethief": ["--attack.rounds", "1", "--attack.epochs", "1", "--attack.strategy", "kcenter"],
}


def fit(tmp_path: Path, name: str, *args: str) -> dict:
    code = main(["fit", "--output_dir", str(tmp_path), "--name", name, "--budget", "80", "--progress_bar", "false",
                 *VICTIM, *args])
    assert code == 0
    return json.loads((tmp_path / name / "results.json").read_text())


def curve(results: dict) -> list[tuple]:
    return [(p["queries"], p["round"], p["surrogate/acc"], p["surrogate/fidelity"]) for p in results["curve"]]


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_defense_that_only_draws_random_numbers_leaves_the_attackers_luck_alone(tmp_path, attack):
    """Hard labels, `none` vs noise of radius 0 (its setup and answers draw random numbers, its answers equal the
    victim's): the seed set, query order, initial weights and batch order are shared, so the curves are equal."""
    common = ["--attack", attack, *ATTACKS[attack], "--label_mode", "hard"]
    plain = fit(tmp_path, "none", "--defense", "none", *common)
    noisy = fit(tmp_path, "noise0", "--defense", "noise", "--defense.eps", "0", *common)
    assert curve(plain) == curve(noisy)
    assert noisy["extra_metrics"]["oracle/top1_changed"] == 0


def test_the_pairing_does_not_hide_a_real_difference(tmp_path):
    """Positive control: soft labels against the reverse sigmoid do change the attacker's curve."""
    common = ["--attack", "jbda", *ATTACKS["jbda"]]
    plain = fit(tmp_path, "none", "--defense", "none", *common)
    defended = fit(tmp_path, "rs", "--defense", "deceptive", "--defense.gamma", "0.5", *common)
    assert curve(plain) != curve(defended)
    assert plain["seed_set"] == defended["seed_set"]  # ... with the same seed set


def test_role_seeds_are_independent_of_each_other_and_stable():
    seeds = {role: role_seed(0, role) for role in ("victim", "defense", "attack", "surrogate_init")}
    assert len(set(seeds.values())) == 4
    assert role_seed(0, "attack") == role_seed(0, "attack") != role_seed(1, "attack")
    assert role_seed(0, "surrogate_train", 0) != role_seed(0, "surrogate_train", 1)
    with pytest.raises(ValueError, match="unknown random role"):
        role_seed(0, "luck")


def experiment(tmp_path: Path, attack, defense=None, name="run") -> Experiment:
    return Experiment(data=Digits(), defense=defense or NoDefense(), attack=attack,
                      keys={"data": "digits", "defense": "none", "attack": type(attack).__name__.lower()},
                      budget=80, victim=VictimConfig(epochs=3), surrogate=SurrogateConfig(),
                      wandb=WandbConfig(mode="disabled"), output_dir=str(tmp_path), name=name)


def test_an_attack_cannot_find_the_victim_or_the_labels_in_its_process(tmp_path, monkeypatch):
    """The cheat of the issue: search the process for a module shaped like the surrogate and copy it. Before the
    split it found the victim and scored fidelity 1.0 after 0 queries."""
    report = tmp_path / "snoop.json"
    monkeypatch.setenv("SNOOP_REPORT", str(report))
    exp = experiment(tmp_path, SnoopingAttack())
    exp.sandbox = "off"  # the memory seal alone (the OS sandbox would also stop it writing its report: test_sandbox)
    results = run_experiment(exp)
    found = json.loads(report.read_text())
    assert found["pid"] != os.getpid()  # the attack ran in another process
    assert found["victim_shaped_modules"] == 0
    eval_size = results["splits"]["eval"]
    assert not [v for v in found["int64_vectors"] if v[0] in (eval_size, results["splits"]["attacker_pool"])]
    assert results["metrics"]["queries"] == 0
    assert results["metrics"]["surrogate/fidelity"] < 0.5  # an untrained surrogate, not the victim


class WritesIntoProbs(Defense):
    """Sharpens in place: `probs` is modified and returned."""

    def forward(self, x, probs):
        probs.pow_(2)
        return probs.div_(probs.sum(-1, keepdim=True))


class WritesIntoImages(Defense):
    def forward(self, x, probs):
        x.mul_(0.5)
        return probs


@pytest.mark.parametrize("defense,edited", [(WritesIntoProbs(), "probabilities"), (WritesIntoImages(), "images")])
def test_a_defense_that_edits_its_inputs_in_place_stops_the_run(tmp_path, defense, edited):
    with pytest.raises(DefenseOutputError, match=rf"broke rule \[inputs-unchanged\].*modified the {edited}"):
        run_experiment(experiment(tmp_path, InPlaceDefenseProbe(), defense))
    assert not (tmp_path / "run" / "results.json").exists()
    assert "inputs-unchanged" in (tmp_path / "run" / "error.txt").read_text()


class FlipsTheArgmaxButClaimsNot(Defense):
    preserves_argmax = True

    def forward(self, x, probs):
        return probs.flip(-1)


def test_a_false_argmax_claim_is_caught_at_run_time(tmp_path):
    with pytest.raises(DefenseOutputError, match=r"broke rule \[argmax\]"):
        run_experiment(experiment(tmp_path, InPlaceDefenseProbe(), FlipsTheArgmaxButClaimsNot()))


def test_attackers_get_a_framework_chosen_seed_set_and_no_pool_ground_truth(tmp_path):
    results = fit(tmp_path, "jbda", "--attack", "jbda", *ATTACKS["jbda"])
    assert results["seed_set"] == {"per_class": 2, "size": 20, "source": "attacker pool",
                                   "labels": "victim task ground truth", "labels_cost_queries": False,
                                   "classes": [2] * 10}
    from stealbench.attacks.base import AttackContext

    assert "pool_y" not in AttackContext.__dataclass_fields__


def test_knockoff_adaptive_without_owned_labels_uses_clusters_or_says_why_not(tmp_path, capsys):
    results = fit(tmp_path, "clusters", "--attack", "knockoff", *ATTACKS["knockoff"])
    assert results["metrics"]["queries"] == 80
    assert "top arms" in capsys.readouterr().out
    assert main(["fit", "--output_dir", str(tmp_path), "--budget", "80", *VICTIM, "--attack", "knockoff",
                 *ATTACKS["knockoff"], "--attack.arms", "labels"]) == 2
    assert "attack.arms labels needs labels the attacker owns" in capsys.readouterr().err
