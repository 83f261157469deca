"""The 8-bit channel (--oracle.quantize 8): the local oracle rounds every attacker query to 8 bits before the
victim and the defense see it, so a DFME probe of step 1e-3 (below one 8-bit level) asks the same question twice."""

from __future__ import annotations

import json

import pytest
import torch

from stealbench.attacks.data_free import unit_directions
from stealbench.config import OracleConfig
from stealbench.defender.oracle import Oracle, quantize_pixels
from stealbench.defenses.none import NoDefense
from stealbench.errors import ConfigError

from test_data_free import victim  # noqa: F401  (the module-scoped victim fixture)


def oracle(victim, quantize=None):  # noqa: F811
    return Oracle(victim["net"], NoDefense(), budget=10**6, input_shape=(1, 8, 8), num_classes=10,
                  quantize=quantize)


def test_quantize_pixels():
    x = torch.tensor([0.0, 1.0, 0.5, 0.3, 1 / 255 * 0.49, 1 / 255 * 0.51])
    q = quantize_pixels(x, 8)
    assert torch.equal(q * 255, torch.round(x * 255)) and q[0] == 0 and q[1] == 1
    assert q[4] == 0 and q[5] == pytest.approx(1 / 255)
    assert torch.equal(quantize_pixels(q, 8), q)  # 8-bit images pass unchanged


def test_a_dfme_probe_below_one_level_is_the_same_query(victim):  # noqa: F811
    """Probes x + 1e-3 u (u a unit direction over the 64 pixels: under half a level per pixel) of 8-bit images:
    through the 8-bit channel the answers equal the unperturbed ones, so the forward difference is exactly 0;
    through the exact channel they differ."""
    x = quantize_pixels(victim["splits"].eval_x[:64], 8)
    u = unit_directions(64, 1, (1, 8, 8), torch.Generator().manual_seed(0))[:, 0]
    probe = (x + 1e-3 * u).clamp(0, 1)
    assert (probe - x).abs().max() < 0.5 / 255
    quantized, exact = oracle(victim, 8), oracle(victim)
    assert torch.equal(quantized.query(probe), quantized.query(x))
    diff = exact.query(probe) - exact.query(x)
    assert diff.abs().max() > 0
    # what the channel does is rounding before the victim: the same answers as the exact oracle on rounded input
    noisy = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(quantized.query(noisy), exact.query(quantize_pixels(noisy, 8)))
    assert quantized.used == 64 * 2 + 32


def test_the_option_is_checked_and_off_by_default():
    assert OracleConfig().quantize is None
    assert OracleConfig(quantize=8).quantize == 8
    for bad in (0, 17, 8.0, True):
        with pytest.raises(ConfigError, match="oracle.quantize"):
            OracleConfig(quantize=bad)
    with pytest.raises(ConfigError, match="oracle.quantize"):
        OracleConfig(url="http://127.0.0.1:1", quantize=8)


def test_fit_dfme_through_the_8_bit_channel(tmp_path):
    from stealbench.cli import main

    out = tmp_path / "runs"
    code = main(["fit", "--data", "digits", "--attack", "dfme", "--attack.batch_size", "32",
                 "--attack.directions", "3", "--attack.num_checkpoints", "2", "--budget", "600",
                 "--victim.epochs", "3", "--oracle.quantize", "8", "--progress_bar", "false",
                 "--output_dir", str(out)])
    assert code == 0
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    results = json.loads((run_dir / "results.json").read_text())
    assert results["identity"]["oracle_quantize"] == 8
    assert results["config"]["oracle"]["quantize"] == 8
    assert results["metrics"]["queries"] == 600
