"""The surrogate's code runs only in its evaluator's process: the evaluation images and nothing else.

A surrogate architecture from a plugin is built and called there, never beside the victim: one that searches its
process for the victim (to delegate to it, fidelity for free) finds nothing, and its outputs are the only thing
that comes back."""

import json
import os

import pytest

from stealbench.cli import main
from stealbench.testing import stealbench_distribution  # noqa: F401  (fixture)

HOSTILE = '''
import gc, json, os
import torch
from torch import nn
from stealbench import hookimpl


class Snooper(nn.Module):
    """A small net that, on its first call, looks for other nets and label vectors in its process."""

    def __init__(self, num_classes, in_chans, image_size):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_chans * image_size * image_size, num_classes))
        self.done = False

    def forward(self, x):
        if not self.done:
            import multiprocessing
            import warnings

            self.done = True
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                objects = gc.get_objects()
                others = [type(o).__name__ for o in objects
                          if isinstance(o, nn.Module) and not isinstance(o, (Snooper, nn.Linear, nn.Sequential,
                                                                            nn.Flatten))
                          and len(list(o.parameters())) >= 2]
                labels = sum(1 for o in objects if isinstance(o, torch.Tensor) and o.dtype == torch.int64
                             and o.dim() == 1 and len(o) >= 100)
            with open(f"{REPORT}.{os.getpid()}", "w") as fh:
                json.dump({"pid": os.getpid(), "process": multiprocessing.current_process().name,
                           "nets": others, "label_vectors": labels}, fh)
        return self.net(x)


REPORT = {report!r}


@hookimpl
def register_architectures(register):
    register("snooper", Snooper)
'''


@pytest.mark.parametrize("sandbox", ["off", "auto"])
def test_a_hostile_surrogate_architecture_finds_no_victim_where_it_runs(tmp_path, stealbench_distribution,
                                                                         one_thread, sandbox):
    # one report per process the surrogate's code ran in (the attacker's trains it, the evaluator's scores it);
    # under bwrap nothing can write outside its own scratch folder, so there is nothing to read
    report = tmp_path / "snoop.json"
    stealbench_distribution("stealbench-snoop", {"sb_snoop": HOSTILE.replace("{report!r}", repr(str(report)))},
                            entry_points={"snoop": "sb_snoop"})
    code = main(["fit", "--data", "digits", "--victim.epochs", "1", "--surrogate.arch", "snooper",
                 "--attack", "random", "--attack.epochs", "1", "--attack.num_checkpoints", "1", "--budget", "20",
                 "--progress_bar", "false", "--sandbox", sandbox, "--output_dir", str(tmp_path / "runs"),
                 "--name", "r"])
    assert code == 0
    results = json.loads((tmp_path / "runs" / "r" / "results.json").read_text())
    assert 0.0 <= results["metrics"]["surrogate/fidelity"] <= 1.0
    if results["sealed"] == "os-sandbox":
        return  # the evaluator ran in bubblewrap, with no way to write outside its scratch: nothing to read here
    found = {r["process"]: r for r in (json.loads(p.read_text()) for p in tmp_path.glob("snoop.json.*"))}
    assert all(r["pid"] != os.getpid() for r in found.values()), "the surrogate's code ran in the defender's process"
    assert set(found) == {"stealbench-evaluator", "stealbench-attacker"}, found
    # where the evaluation images are, there is no victim (no net but the surrogate) and no label vector
    assert found["stealbench-evaluator"]["nets"] == [] and found["stealbench-evaluator"]["label_vectors"] == 0


def test_a_surrogate_architecture_that_does_not_build_is_named_before_the_attack(tmp_path, stealbench_distribution,
                                                                                  capsys, one_thread):
    broken = ("from stealbench import hookimpl\n"
              "def make(num_classes, in_chans, image_size):\n    raise RuntimeError('no such layer')\n"
              "@hookimpl\ndef register_architectures(register):\n    register('broken', make)\n")
    stealbench_distribution("stealbench-broken-arch", {"sb_broken_arch": broken},
                            entry_points={"brokenarch": "sb_broken_arch"})
    code = main(["fit", "--data", "digits", "--victim.epochs", "1", "--surrogate.arch", "broken",
                 "--attack", "random", "--budget", "20", "--progress_bar", "false", "--sandbox", "off",
                 "--output_dir", str(tmp_path / "runs"), "--name", "r"])
    err = capsys.readouterr().err
    assert code != 0
    assert "--surrogate.arch 'broken' does not build" in err and "no such layer" in err
    assert "Traceback" not in err
