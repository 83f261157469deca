"""A keyed, deterministic, batched hash of images: which of n answers (ensemble member, proxy) serves a query.

The pixels are quantised to `levels` grey levels (so float noise below half a level does not change the hash), and
each image is first mapped to ``(sum_d w_d * q_d(x) + b) mod p`` with p = 2^31 - 1 and a secret key (w, b) drawn
once from the defender's generator: a Carter-Wegman universal hash, so two different quantised images collide with
probability about 1/p over the key. Two keyed rounds of squaring mod p and an xor-shift then finish it (at most
quadrupling that probability), so that changing one pixel does not shift every image's hash by the same amount,
and ``h mod n`` spreads distinct inputs evenly over n choices. All arithmetic stays below 2^62 (q < 2^15,
w < 2^31, at most 2^15 terms per chunk before reducing mod p), so int64 never overflows, and a row's hash does not
depend on the other rows of its batch. Device-agnostic: the key lives in a buffer.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

_P = 2**31 - 1  # a Mersenne prime
_CHUNK = 2**15  # pixels summed before reducing mod p: 2^15 terms of q * w < 2^15 * 2^31 stay below 2^61


class InputHash(nn.Module):
    """``InputHash(dim, generator)(x) -> (B,) int64 in [0, 2^31)``; ``choose(x, n) -> (B,)`` in [0, n)."""

    def __init__(self, dim: int, generator: torch.Generator, levels: int = 256) -> None:
        super().__init__()
        if not 2 <= levels <= 2**15:
            raise ValueError(f"levels must be in [2, 32768], got {levels}")
        self.levels = int(levels)
        self.register_buffer("_w", torch.randint(1, _P, (int(dim),), generator=generator, dtype=torch.int64))
        self.register_buffer("_b", torch.randint(0, _P, (3,), generator=generator, dtype=torch.int64))

    def quantise(self, x: Tensor) -> Tensor:
        return torch.round(x.detach().reshape(len(x), -1).double().clamp(0, 1) * (self.levels - 1)).to(torch.int64)

    def forward(self, x: Tensor) -> Tensor:
        q = self.quantise(x)
        if q.shape[1] != self._w.numel():
            raise ValueError(f"InputHash was keyed for {self._w.numel()} pixels, got images of {q.shape[1]}")
        w = self._w.to(q.device)
        b = self._b.to(q.device)
        h = b[0].expand(len(q)).clone()
        for start in range(0, q.shape[1], _CHUNK):  # a loop over pixel chunks, not over images
            h = (h + (q[:, start:start + _CHUNK] * w[start:start + _CHUNK]).sum(1)) % _P
        for k in b[1:]:  # non-linear finish: a pixel's change no longer shifts every image's hash alike
            h = ((h + k) % _P) ** 2 % _P  # < 2^62
            h = h ^ (h >> 15)
        return h

    def choose(self, x: Tensor, n: int) -> Tensor:
        """Which of `n` choices serves each image (the same image, the same choice)."""
        return self.forward(x) % int(n)
