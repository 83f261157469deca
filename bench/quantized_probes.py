"""Issue 18, item 5: what an 8-bit channel does to a data-free attack's forward-difference probes.

DFME and MAZE perturb the generator's pre-activation output by epsilon along a unit direction (data_free.Generator,
`epsilon` 1e-3) and read the gradient from the oracle's answers to the perturbed copies. A real image API rounds
every pixel to 8 bits first (`--oracle.quantize 8`). This prints, for the generator at its initial weights (as the
game starts), how far a probe moves a pixel against half an 8-bit level, the share of pixels the rounding changes,
and the share of probes that reach the victim identical to their unperturbed image. No victim, no training: CPU
seconds.

    python bench/quantized_probes.py                       # MNIST's shape, DFME's latent size, batch 256
"""

from __future__ import annotations

import argparse

import torch

from stealbench.attacks.data_free import Generator, unit_directions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="1,28,28", help="C,H,W of the victim's input")
    parser.add_argument("--latent_dim", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--epsilons", default="1e-3,1e-2,1e-1")
    parser.add_argument("--bits", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    shape = tuple(int(s) for s in args.shape.split(","))
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    gen = Generator(args.latent_dim, shape, "tanh").train()
    levels = 2 ** args.bits - 1
    quantize = lambda t: torch.round(t * levels) / levels  # noqa: E731  (the oracle's rounding)
    with torch.no_grad():
        a = gen(torch.randn(args.batch, args.latent_dim, generator=g))
        u = unit_directions(args.batch, 1, tuple(a.shape[1:]), g)[:, 0]
        print(f"shape {shape}, batch {args.batch}, {args.bits}-bit channel (half a level: {0.5 / levels:.2e}), "
              f"generator at its initial weights, seed {args.seed}\n")
        print("| epsilon | largest pixel move | pixels whose 8-bit value the probe changes "
              "| probes identical to their base after rounding |")
        print("|---|---|---|---|")
        for eps in (float(e) for e in args.epsilons.split(",")):
            x, probe = gen.activate(a), gen.activate(a + eps * u)
            moved = float((probe - x).abs().max())
            changed = float((quantize(x) != quantize(probe)).float().mean())
            same = float((quantize(x) == quantize(probe)).flatten(1).all(1).float().mean())
            print(f"| {eps:g} | {moved:.2e} | {changed:.3%} | {same:.1%} |")


if __name__ == "__main__":
    main()
