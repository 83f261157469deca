"""`fit` starts one attacker process, not two: the one that checked the attack's options runs the attack, when it
was started as the run would start its own (same sandbox, device and hidden folders)."""

from __future__ import annotations

import json

import pytest

from stealbench.attacker import launch


def test_fit_starts_one_attacker_process(tmp_path, monkeypatch):
    from stealbench.cli import main

    starts = []
    real_start = launch.AttackerLink.start

    def counting_start(self):
        starts.append(self.sandbox)
        return real_start(self)

    monkeypatch.setattr(launch.AttackerLink, "start", counting_start)
    out = tmp_path / "runs"  # not there yet: made by the option check, so that its sandbox hides it
    code = main(["fit", "--data", "digits", "--attack", "random", "--attack.epochs", "1", "--budget", "50",
                 "--victim.epochs", "1", "--progress_bar", "false", "--output_dir", str(out)])
    assert code == 0
    assert len(starts) == 1, starts
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    assert json.loads((run_dir / "results.json").read_text())["metrics"]["queries"] == 50
    assert not launch._SPARE


class FakeProcess:
    exitcode = None


def spare(tmp_path, sandbox="bwrap", device="cpu"):
    link = launch.AttackerLink(sandbox, [tmp_path / "a", tmp_path / "b"], device)
    link.hidden_at_start = launch.existing(link.hide)
    link.process = FakeProcess()
    link.closed = False
    link.close = lambda timeout=1.0: setattr(link, "closed", True)
    return link


def test_the_spare_is_taken_only_when_started_as_the_run_would_start_its_own(tmp_path):
    (tmp_path / "a").mkdir()
    hide = [tmp_path / "a", tmp_path / "b"]
    link = spare(tmp_path)
    launch.keep_spare(link)
    assert launch.take_spare("bwrap", hide, "cpu", 5.0) is link and link.timeout == 5.0
    assert launch.take_spare("bwrap", hide, "cpu", 5.0) is None  # taken once
    for sandbox, device in (("off", "cpu"), ("bwrap", "cuda:0")):
        link = spare(tmp_path)
        launch.keep_spare(link)
        assert launch.take_spare(sandbox, hide, device, 5.0) is None and link.closed
    # a run folder created since the sandbox started would be visible in it: a new process instead
    link = spare(tmp_path)
    launch.keep_spare(link)
    (tmp_path / "b").mkdir()
    assert launch.take_spare("bwrap", hide, "cpu", 5.0) is None and link.closed
    # without the OS sandbox nothing is hidden by mounts: the folders do not matter
    link = spare(tmp_path, sandbox="off")
    launch.keep_spare(link)
    assert launch.take_spare("off", [tmp_path / "c"], "cpu", None) is link


def test_a_dead_spare_is_not_taken(tmp_path):
    link = spare(tmp_path)
    link.process.exitcode = 1
    launch.keep_spare(link)
    assert launch.take_spare("bwrap", link.hide, "cpu", None) is None and link.closed


@pytest.fixture(autouse=True)
def no_spare_left():
    yield
    launch.close_spare()
