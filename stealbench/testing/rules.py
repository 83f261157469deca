"""The conformance rules, by id: what each kind of component must do (the checks name these ids)."""

from __future__ import annotations

#: rule id -> what a defense must do
DEFENSE_RULES: dict[str, str] = {
    "interface": "is a subclass of stealbench.defenses.Defense whose defaults construct it",
    "setup": "setup(DefenseSetup) runs without error",
    "simplex": "releases probability vectors: finite, >= 0, rows summing to 1",
    "shape-dtype-device": "returns a tensor with the input probabilities' shape, dtype and device",
    "inputs-unchanged": "does not modify x or probs in place",
    "batch-consistency": "a stateless, non-randomised defense answers a batch as it answers each query alone",
    "seeded-repeat": "two instances built and set up under the same seed give the same answers",
    "reset": "a stateful defense answers the same again after reset()",
    "argmax": "a defense with preserves_argmax=True never changes the victim's top-1 class",
    "report": "report() returns a dict of str -> finite number, naming none of the figures the framework measures",
    "victim-unchanged": "setup() leaves the weights of the victim it is given unchanged",
    "benign-alike": "answers benign users as the attacker: a copy in the same state, same seed, answers the same",
    "few-classes": "in a world of 2 classes it gives valid answers, or refuses with a ConfigError at setup",
    "hidden-state": "a randomised defense that is not stateful answers the same batch alike early and late in a "
                    "stream of repeats",
}

#: rule id -> what an attack must do
ATTACK_RULES: dict[str, str] = {
    "interface": "is a subclass of stealbench.attacks.Attack whose defaults construct it",
    "sendable": "survives pickling (a run sends the attack to the attacker's own process)",
    "run": "run(ctx) finishes without error and returns an nn.Module surrogate",
    "budget": "never asks the oracle for more images than oracle.remaining",
    "oracle-only": "every victim evaluation goes through oracle.query (the victim is never touched directly)",
    "pool-unchanged": "does not modify the attacker pool in place",
    "checkpoint": "calls ctx.checkpoint at least once, at query counts that never decrease",
    "seeded-repeat": "two runs under the same seed send the same queries",
    "label-mode": "trains only on ctx.to_targets(answers), under the soft and the hard label mode alike",
    "rounds": "ctx.checkpoint's round numbers are integers counting from 1, strictly increasing",
    "surrogate": "every model it checkpoints or returns is the run's surrogate architecture (ctx.new_surrogate())",
}


#: rule id -> what a registered reproduction file must be (checked without running anything)
REPRODUCTION_RULES: dict[str, str] = {
    "reproduction-file": "the file (and its <stem>_quick.yaml, if any) parses as a grid with a `claims:` section",
    "reproduction-keys": "every data set, defense and attack it names is registered; the utility defense takes "
                         "each swept setting",
    "reproduction-select": "every check selects on fields its records have (a misspelt field reads `no data`)",
}

