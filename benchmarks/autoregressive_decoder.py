"""Is an autoregressive decoder worth its cost at a 10-minute CPU budget? A probe for issue 13.

The VampPrior and PixelVAE papers gain their largest margins (3 nats on MNIST,
11 on OMNIGLOT) from a decoder p(x|z) = Π_i p(x_i | x_<i, z) that also reads
the pixels before each one. This script measures the cheapest such decoder
against the plain MLP VAE at an equal wall-clock budget on one CPU thread; it
was written to decide whether pyrovae should have one as a likelihood before
building it, and pyrovae has it now, with the same logits, as ``--likelihood
autoregressive-bernoulli`` (``pyrovae/model/likelihoods/autoregressive.py``).
The script is kept as it was, so that its figures in docs/benchmarks.md reproduce.

Both models: MLP encoder 784-400-50 (Gaussian q(z|x)), N(0, I) prior, MLP
decoder 50-400-784 giving logits d(z), Adam (lr 1e-3), batch 256,
Fashion-MNIST dynamically binarized, analytic KL. ``gated`` adds to each
logit a term of the pixels before it, in raster order:

    logit_i = d_i(z) + Σ_c w_c relu(a_c(x)_i + u_c d_i(z)) + b,

where ``a = conv(x)`` is a masked convolution (``--channels`` C, a
``--kernel`` K×K window, the centre pixel and those after it masked out, as in
PixelCNN's first layer), so pixel i reads the K×K half-window before it; the
u_c mix the decoder's logit into the hidden units. ``a(x)`` is computed once
per image, so an importance-sampling evaluation pays the convolution once for
all K draws. ``plain`` is the VAE without it.

Each model trains for ``--budget`` seconds, then ONE evaluator scores it:
importance sampling with its own q(z|x), K = ``-k`` draws, on the first
``--test-size`` Fashion-MNIST test images binarized once (seed 1), with
``benchmarks/quality.py``'s ``importance_log_px``. Run the two side by side on
a 2-core machine so both see the same load::

    python benchmarks/autoregressive_decoder.py plain --budget 600 --out plain.pt &
    python benchmarks/autoregressive_decoder.py gated --budget 600 --out gated.pt; wait
    python benchmarks/autoregressive_decoder.py compare gated.pt plain.pt

Each prints one line: variant, epochs, log p(x) and the ELBO (mean over
images, with standard errors).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from quality import DATA_DIR, importance_log_px, read_idx  # noqa: E402

LATENT, HIDDEN = 50, 400


class MaskedConv(nn.Conv2d):
    """A K×K convolution that reads only the pixels before the centre, in raster order."""

    def __init__(self, channels: int, kernel: int) -> None:
        super().__init__(1, channels, kernel, padding=kernel // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, kernel // 2, kernel // 2 :] = 0  # the centre and the rest of its row
        mask[:, :, kernel // 2 + 1 :] = 0  # the rows below
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class VAE(nn.Module):
    """The MLP VAE; with ``channels``, the autoregressive term above added to its logits."""

    def __init__(self, channels: int = 0, kernel: int = 5) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(784, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 2 * LATENT))  # fmt: skip
        self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 784))  # fmt: skip
        self.channels = channels
        if channels:
            self.conv = MaskedConv(channels, kernel)
            self.u = nn.Parameter(torch.zeros(channels, 1, 1))
            self.w = nn.Parameter(torch.zeros(channels, 1, 1))
            self.b = nn.Parameter(torch.zeros(()))

    def logits(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(..., batch, 1, 28, 28)`` of codes ``(..., batch, L)`` for images ``x``."""
        d = self.decoder(z).view(*z.shape[:-1], 1, 28, 28)
        if not self.channels:
            return d
        hidden = F.relu(self.conv(x) + self.u * d)  # (..., batch, C, 28, 28)
        return d + (hidden * self.w).sum(-3, keepdim=True) + self.b

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the ELBO, averaged over the batch."""
        loc, log_scale = self.encoder(x).chunk(2, -1)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        recon = F.binary_cross_entropy_with_logits(self.logits(z, x), x, reduction="sum")
        kl = 0.5 * (loc**2 + (2 * log_scale).exp() - 1 - 2 * log_scale).sum()
        return (recon + kl) / x.shape[0]

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """log p(x, z_k) - log q(z_k|x), ``(k, batch)``; the 2π terms cancel."""
        loc, log_scale = self.encoder(x).chunk(2, -1)
        eps = torch.randn(k, *loc.shape)
        z = loc + log_scale.exp() * eps
        logits = self.logits(z, x)
        target = x.expand_as(logits)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        log_px_z = log_px_z.flatten(2).sum(-1)
        return log_px_z - 0.5 * (z**2).sum(-1) + 0.5 * (eps**2).sum(-1) + log_scale.sum(-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variant", choices=["plain", "gated", "compare"])
    parser.add_argument("files", nargs="*", type=Path, help="compare: two --out files, A B")
    parser.add_argument("--budget", type=float, default=600.0, help="training seconds")
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--kernel", type=int, default=5)
    parser.add_argument("-k", type=int, default=200, help="importance samples per image")
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--out", type=Path, help="write the per-image log p(x) here (torch.save)")
    args = parser.parse_args()
    if args.variant == "compare":
        a, b = (torch.load(path) for path in args.files)
        diff = a - b
        print(f"A - B, paired over {diff.numel()} images: {diff.mean():+.2f} ± "
              f"{diff.std().item() / math.sqrt(diff.numel()):.2f}")  # fmt: skip
        return
    torch.set_num_threads(1)
    train = read_idx(args.data_dir, "train")
    torch.manual_seed(1)
    test = torch.bernoulli(read_idx(args.data_dir, "t10k")[: args.test_size])
    torch.manual_seed(0)
    channels = args.channels if args.variant == "gated" else 0
    model = VAE(channels, args.kernel)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started, epochs = time.perf_counter(), 0
    while time.perf_counter() - started < args.budget:
        for index in torch.randperm(train.shape[0]).split(256):
            optimizer.zero_grad(set_to_none=True)
            model.loss(torch.bernoulli(train[index])).backward()
            optimizer.step()
            if time.perf_counter() - started >= args.budget:
                break
        epochs += 1
    log_px, elbo = importance_log_px(model.log_weights, test, args.k, 0)
    se = lambda v: v.std().item() / math.sqrt(v.numel())  # noqa: E731
    print(f"{args.variant} channels={channels} kernel={args.kernel} epochs={epochs} "
          f"log_px={log_px.mean():.2f}±{se(log_px):.2f} elbo={elbo.mean():.2f}±{se(elbo):.2f}"
         )  # fmt: skip
    if args.out:
        torch.save(log_px, args.out)


if __name__ == "__main__":
    main()
