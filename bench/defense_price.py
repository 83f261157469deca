"""A defense's price in serving time, as the oracle measures it (`defense/cost_ratio`), at a given input size.

Usage: python bench/defense_price.py [--arch lenet5] [--size 28] [--queries 2048] [--defenses none modelguard-w ...]
The victim has random weights (serving time does not depend on training); queries are uniform noise images, answered
by the oracle in its default batches of 1,024. ModelGuard-S is seeded from the victim's answers on 2,000 other noise
images. Prints each defense's cost ratio, seconds and state size.
"""

import argparse

import torch

from stealbench.defender.oracle import Oracle
from stealbench.defenses.base import DefenseSetup
from stealbench.models.factory import build_net
from stealbench.plugins import get_catalog

parser = argparse.ArgumentParser()
parser.add_argument("--arch", default="lenet5")
parser.add_argument("--size", type=int, default=28)
parser.add_argument("--queries", type=int, default=2048)
parser.add_argument("--defenses", nargs="*", default=["none", "deceptive", "modelguard-w", "modelguard-s"])
args = parser.parse_args()

torch.manual_seed(0)
shape = (1, args.size, args.size)
victim = build_net(args.arch, num_classes=10, input_shape=shape, mean=[0.5], std=[0.25]).eval()
train_x = torch.rand(2000, *shape)
queries = torch.rand(args.queries, *shape)
for key in args.defenses:
    defense = get_catalog().defenses.get(key)()
    with torch.no_grad():
        train_y = victim(train_x).argmax(-1)
    defense.setup(DefenseSetup(victim=victim, train_x=train_x, train_y=train_y, num_classes=10, input_shape=shape,
                               device=torch.device("cpu"), generator=torch.Generator().manual_seed(0)))
    oracle = Oracle(victim, defense, budget=args.queries, input_shape=shape, num_classes=10)
    oracle.query(queries)
    price = oracle.price(defense.state_size())
    print(f"{key:14s} cost ratio {price['defense/cost_ratio']:8.3f}  victim {price['victim_seconds']:.3f}s  "
          f"defense {price['defense_seconds']:.3f}s  state {price['defense/state_size']}  ({args.arch}, "
          f"{args.size}x{args.size}, {args.queries} queries)")
