"""Tests of the template plugin. They are copied with it: keep them passing in your own plugin."""

from __future__ import annotations

import torch

from stealbench.testing import check_plugin
from stealbench_template import TemplateDefense


def test_it_keeps_the_top1_and_flattens():
    probs = torch.softmax(torch.randn(16, 10) * 3, -1)
    out = TemplateDefense(temperature=2.0)(torch.rand(16, 1, 8, 8), probs)
    assert torch.equal(out.argmax(-1), probs.argmax(-1))
    assert (out.max(-1).values <= probs.max(-1).values + 1e-6).all()


def test_the_plugin_is_registered_and_conforms():
    """Installed (pip install .), the entry point is found and everything it registers passes the kit."""
    assert check_plugin("template") == ["template"]


def test_setup_and_answers_in_the_kit_world(defense_setup):
    defense = TemplateDefense(temperature=1.0)
    defense.setup(defense_setup)
    x = torch.rand(4, *defense_setup.input_shape)
    probs = torch.softmax(defense_setup.victim(x), -1)
    assert torch.allclose(defense(x, probs), probs, atol=1e-6)  # T = 1 releases the answer unchanged
