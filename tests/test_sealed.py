"""The defender's seals (issue 22): victim cache entries an attacker cannot forge or swap, and leaderboards that can
refuse runs whose attacker was sealed in memory only."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
from pathlib import Path

import torch

from stealbench import sealed_file
from stealbench.analysis.leaderboard import build
from stealbench.cli import main
from stealbench.config import VictimConfig
from stealbench.training import TrainSettings
from test_bad_input_runtime import _Tiny  # the same tiny net the cache tests there use
from test_leaderboard import write_run




def _obtain(cache: Path, seed: int = 0):
    from stealbench.victim import obtain_victim

    g = torch.Generator().manual_seed(0)
    centers = torch.randn(4, 16, generator=g) * 3
    y = torch.arange(400) % 4
    x = (centers[y] + torch.randn(400, 16, generator=g) * 0.5).view(400, 1, 4, 4)
    cfg = VictimConfig(arch="tiny", epochs=3, cache_dir=str(cache))
    settings = TrainSettings(batch_size=32, lr=1e-2, trainer={"accelerator": "cpu"})
    return obtain_victim(_Tiny, cfg, {"dataset": "blobs"}, seed, x, y, 4, settings)


def test_the_key_is_private_and_made_once(tmp_path):
    key = sealed_file.load_key(tmp_path)
    mode = stat.S_IMODE((tmp_path / "key").stat().st_mode)
    assert mode == 0o600 and len(key) == 32 and sealed_file.load_key(tmp_path) == key


def test_a_cache_entry_rewritten_with_a_recomputed_sha256_is_refused(tmp_path, capsys, one_thread):
    """The attack of the issue: change the weights, recompute the checksum, write the file back. Without the key
    it can only put a plain sha256 where the HMAC goes."""
    path = Path(_obtain(tmp_path).path)
    data = path.read_bytes()
    body = data[len(sealed_file.MAGIC) + 65:]
    blob = torch.load(io.BytesIO(body), weights_only=True)
    blob["state_dict"]["lin.weight"].mul_(-1)
    forged = io.BytesIO()
    torch.save(blob, forged)
    path.write_bytes(sealed_file.MAGIC + hashlib.sha256(forged.getvalue()).hexdigest().encode() + b"\n"
                     + forged.getvalue())
    again = _obtain(tmp_path)
    assert again.origin == "trained" and "fails its checksum" in capsys.readouterr().out
    assert _obtain(tmp_path).origin == "cache"  # replaced by a sealed one


def test_another_victims_sealed_entry_swapped_in_is_refused(tmp_path, capsys, one_thread):
    mine, other = Path(_obtain(tmp_path, seed=0).path), Path(_obtain(tmp_path, seed=1).path)
    assert mine != other
    shutil.copyfile(other, mine)  # a valid seal, but of the victim with seed 1
    again = _obtain(tmp_path, seed=0)
    assert again.origin == "trained" and "stored for another victim" in capsys.readouterr().out


def test_an_unsealed_entry_of_an_older_version_is_a_miss(tmp_path, capsys, one_thread):
    path = Path(_obtain(tmp_path).path)
    body = path.read_bytes()[len(sealed_file.MAGIC) + 65:]
    path.write_bytes(body)  # the old format: a plain torch file with a sha256 in its meta
    assert _obtain(tmp_path).origin == "trained" and "not sealed" in capsys.readouterr().out


def _sealed_run(root: Path, defense: str, sealed: str | None) -> Path:
    folder = write_run(root, defense=defense)
    payload = json.loads((folder / "results.json").read_text())
    if sealed is not None:
        payload["sealed"] = sealed
    (folder / "results.json").write_text(json.dumps(payload))
    return folder


def test_the_leaderboard_can_refuse_runs_not_sealed_by_the_os(tmp_path, capsys):
    _sealed_run(tmp_path, "none", "os-sandbox")
    _sealed_run(tmp_path, "deceptive", "memory-only")
    _sealed_run(tmp_path, "topk", None)  # written before the field existed
    rows, problems = build([str(tmp_path)])
    assert sum(len(r.runs) for r in rows) == 3 and not problems
    rows, problems = build([str(tmp_path)], require_sealed=True)
    assert [r.defense for r in rows] == ["none"]
    assert sorted(p[1].split(",")[0] for p in problems) == ["attacker sealed memory-only",
                                                            "attacker sealed unknown (an older run)"]
    assert main(["leaderboard", str(tmp_path), "--require_sealed", "--no_plots",
                 "--output_dir", str(tmp_path / "lb")]) == 0
    assert "refused by --require_sealed" in capsys.readouterr().out


def test_results_without_the_sandbox_say_memory_only(tmp_path, one_thread):
    assert main(["fit", "--data", "digits", "--victim.epochs", "1", "--attack", "random", "--attack.epochs", "1",
                 "--attack.num_checkpoints", "1", "--budget", "20", "--progress_bar", "false", "--sandbox", "off",
                 "--output_dir", str(tmp_path), "--name", "r"]) == 0
    assert json.loads((tmp_path / "r" / "results.json").read_text())["sealed"] == "memory-only"
