"""The attacker's compute (issue 18, item 4): measured from the defender's side, from the kernel's accounting of
the attacker's processes, and recorded in results.json's `attacker_compute`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from stealbench.attacks.random import RandomSamples
from stealbench.config import SurrogateConfig, VictimConfig, WandbConfig
from stealbench.data.digits import Digits
from stealbench.defender.attacker_compute import tree_cpu_seconds
from stealbench.defenses.none import NoDefense
from stealbench.runner import Experiment, run_experiment

linux = pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc (Linux)")

# burns about `seconds` of CPU in the process itself and as much in a child it starts, then waits to be read
BURN = """
import subprocess, sys, time
def burn(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
child = None
if len(sys.argv) > 2:
    child = subprocess.Popen([sys.executable, "-c", "import time\\nend = time.process_time() + float(%r)\\n"
                              "while time.process_time() < end: pass\\ntime.sleep(30)" % sys.argv[1]])
burn(float(sys.argv[1]))
print("burnt", flush=True)
time.sleep(30)
"""


@linux
def test_the_cpu_time_of_a_process_and_its_children_is_counted():
    proc = subprocess.Popen([sys.executable, "-c", BURN, "0.4", "child"], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the child ends with it
    try:
        assert proc.stdout.readline().strip() == "burnt"
        deadline = time.monotonic() + 10
        while (seconds := tree_cpu_seconds(proc.pid)) < 0.8 and time.monotonic() < deadline:
            time.sleep(0.05)  # the child may still be burning its share
        assert 0.8 <= seconds < 5.0, seconds  # both processes' time, not only the parent's
        alone = subprocess.run(["cat", f"/proc/{proc.pid}/stat"], capture_output=True, text=True).stdout
        tick = os.sysconf("SC_CLK_TCK")
        parent = sum(int(f) for f in alone[alone.rindex(")") + 2:].split()[11:13]) / tick
        assert parent < seconds - 0.3  # the parent alone burnt only about half of it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert tree_cpu_seconds(proc.pid) is None  # gone: no figure rather than a wrong one
    assert tree_cpu_seconds(None) is None


@linux
def test_a_run_records_the_attackers_compute(tmp_path, one_thread):
    exp = Experiment(data=Digits(), defense=NoDefense(), attack=RandomSamples(num_checkpoints=2, epochs=3),
                     keys={"data": "digits", "defense": "none", "attack": "random"}, budget=300,
                     victim=VictimConfig(epochs=2), surrogate=SurrogateConfig(), wandb=WandbConfig(mode="disabled"),
                     output_dir=str(tmp_path), name="run")
    run_experiment(exp)
    compute = json.loads((tmp_path / "run" / "results.json").read_text())["attacker_compute"]
    # the attacker's process imported torch and trained two surrogates: seconds of CPU, within the phase's wall
    # time per thread it may use (one here), plus its start-up before the phase
    assert 0.5 < compute["cpu_seconds"] < 600, compute
    assert compute["wall_seconds"] > compute["defender_answering_seconds"] > 0, compute
    assert "defender" in compute["measured_by"]
