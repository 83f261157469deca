"""Issue 4: how much of a defense's effect each defense-aware label mode removes (no surrogate training).

A LeNet-free, quick setting: an MLP victim trained on digits (plain torch, seconds), its answers on the
evaluation split, the defense applied, then the label mode's recovery. Reports L1(released, clean),
L1(recovered, clean) and 1 - their ratio ("removed"), per (defense, label mode).

    python bench/label_modes_effect.py
"""

from __future__ import annotations

import torch
from torch import nn

from stealbench.data.digits import Digits
from stealbench.defenses.deceptive import reverse_sigmoid
from stealbench.defenses.noise import LogitNoise
from stealbench.attacker.label_modes import LabelOptions, effect_removed, make_label_mode
from stealbench.attacker.label_modes.estimate import estimate_reverse_sigmoid
from stealbench.attacker.label_modes.reverse_sigmoid import invert_reverse_sigmoid
from stealbench.defender.oracle import Oracle


def main() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    s = Digits().splits()
    victim = nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(victim.parameters(), lr=2e-3)
    for _ in range(60):
        for idx in torch.randperm(len(s.victim_x)).split(64):
            loss = nn.functional.cross_entropy(victim(s.victim_x[idx]), s.victim_y[idx])
            opt.zero_grad(), loss.backward(), opt.step()
    victim.eval()
    with torch.no_grad():
        clean = torch.softmax(victim(s.eval_x), -1)
    print(f"digits MLP victim, eval acc {(clean.argmax(-1) == s.eval_y).float().mean():.3f}, "
          f"{len(clean)} answers, median top-1 {clean.max(-1).values.median():.4f}\n")
    print("| defense | label mode | L1 released | L1 recovered | effect removed | notes |")
    print("| --- | --- | --- | --- | --- | --- |")
    for beta, gamma in ((1.0, 0.1), (0.5, 0.3), (1.0, 0.5)):
        released = reverse_sigmoid(clean, beta, gamma)
        rec, solved = invert_reverse_sigmoid(released, beta, gamma)
        e = effect_removed(clean, released, rec)
        print(f"| deceptive b={beta} g={gamma} | invert (known) | {e['l1_released']:.3f} | {e['l1_recovered']:.3f} "
              f"| {e['l1_removed']:.1%} | solved {solved.float().mean():.1%} |")
        found = estimate_reverse_sigmoid(released[:256])
        if found is None:
            print(f"| deceptive b={beta} g={gamma} | invert (estimated) | | | | too few clip-floor answers |")
            continue
        (b, g), rows = (found.beta, found.gamma), found.rows
        rec, solved = invert_reverse_sigmoid(released, b, g)
        e = effect_removed(clean, released, rec)
        print(f"| deceptive b={beta} g={gamma} | invert (estimated) | {e['l1_released']:.3f} | {e['l1_recovered']:.3f} "
              f"| {e['l1_removed']:.1%} | estimate b={b:.2f} g={g:.3f} from {rows} floor rows |")
    for eps in (1.0, 3.0):
        for samples in (4, 16):
            defense_seed = 1
            single = Oracle(victim, LogitNoise(eps=eps, seed=defense_seed), budget=len(clean),
                            input_shape=(1, 8, 8), num_classes=10).query(s.eval_x)
            oracle = Oracle(victim, LogitNoise(eps=eps, seed=defense_seed + 1), budget=len(clean) * samples,
                            input_shape=(1, 8, 8), num_classes=10)
            mode = make_label_mode("smooth", 10, LabelOptions(samples=samples))
            averaged = mode.wrap_oracle(oracle).query(s.eval_x)
            e = effect_removed(clean, single, averaged)
            print(f"| noise eps={eps} (L2, logit) | smooth x{samples} (log-mean) | {e['l1_released']:.3f} | "
                  f"{e['l1_recovered']:.3f} | {e['l1_removed']:.1%} | {samples}x the queries; "
                  f"top-1 flips undone {e['top1_flips_undone']:.1%} |")


if __name__ == "__main__":
    main()
