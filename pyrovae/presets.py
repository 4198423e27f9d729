"""Named training configurations: ``pyrovae train --preset NAME``.

A preset sets the defaults of some train options; options given on the
command line, and keys of a ``--config`` file, override them. The preset's
name is recorded in the run's config (``train.preset``) beside the resolved
options, so ``pyrovae train --config RUN/config.toml`` trains the same run.

======  ============================================================  =========================
name    what it sets                                                   for
======  ============================================================  =========================
fast    nothing: today's defaults (Gaussian prior, ELBO, 30 epochs)    a first look, tests
best    ``--prior flow --batch-size 256 --ema 0.999``                  quality at a fixed budget
paper   ``--network gated --prior flow --objective iwae``              the longest budget
        ``--particles 5 --epochs 1000 --lr-schedule cosine``
        ``--ema 0.999``
======  ============================================================  =========================

``best`` (for a budget of minutes) is a learned flow prior (Papamakarios et
al. 2017) with the plain ELBO, at batch size 256: on one CPU thread that runs
more images a second than 128, and in 10 minutes it beat 128 by 0.30 ± 0.05
nats and 512 by 0.12 ± 0.05 (docs/benchmarks.md, "Choosing best"). At an
equal 10-minute budget on one CPU thread
(Fashion-MNIST, latent 50, log p(x) by importance sampling with K = 1000 on
2000 test images; docs/benchmarks.md, "Choosing best"), it beat the flow prior
with IWAE-5 (the earlier ``best``) by 0.72 ± 0.06 nats: IWAE-5 costs about 2.6
times the time per epoch (26 epochs against 69), which the tighter bound did
not repay. It also beat a VampPrior with pythae's hardtanh pseudo-inputs (-0.55
± 0.06) and itself at twice the step size (-0.63 ± 0.07). An exponential moving
average of the weights with decay 0.999 raised it by 0.63 ± 0.03 nats in the
same 10 minutes (the same training scored with and without it; 0.9995 did
less; docs/benchmarks.md, "Choosing best"). On runs of a few hundred steps it
costs a little (30 epochs of the digits at batch 256, 180 steps: -0.14 ± 0.01
nats; "Free bits and EMA on digits"), where, still in its warm-up
(:mod:`pyrovae.training.ema`), the average spans about the last tenth of the
run. ``paper``, the long run, sets an EMA of 0.999 with IWAE-5 (in
``benchmarks/flows.py``, at equal epochs, IWAE-5 added 0.2 nats to the flow
prior's 2.6) and a cosine schedule. Its schedule ends at a step size near zero,
where the average equals the trained weights (120 epochs: -0.00 ± 0.00 nats,
with 0.99 or 0.999), but until then 0.999 scored up to 0.37 nats more test
ELBO than 0.99 (docs/benchmarks.md, "``paper``'s EMA"). ``paper``
has not run its 1000 epochs. Its network is the gated one (Tomczak & Welling's
gated linear units, one layer of 400): given 90 minutes on one CPU thread (254
epochs) it scored -227.64 ± 0.76 nats on the full Fashion-MNIST test set, K =
5000, where the ReLU MLP had scored -227.76 after 675 epochs in two cosine cycles
(about 5.1 CPU hours against 1.5), paired on 2000 images +0.11 ± 0.04 nats for
the gated one; resumed for a second cosine cycle of 80 minutes (481 epochs, 2.8
CPU hours) it scored -227.28 (docs/benchmarks.md, "The ``paper`` preset"). No
preset sets free bits, which needs a per-dimension analytic KL that the flow
prior has not (with a Gaussian prior and 50 latent dimensions, 0.25 nats
raised log p(x) by 0.18).

This module imports nothing heavy: ``pyrovae train --help`` lists the presets.
"""

from __future__ import annotations

from typing import Any

#: Each preset's train options, keyed by option name (as in a ``--config`` file).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "best": {"prior": "flow", "batch_size": 256, "ema": 0.999},
    "paper": {
        "network": "gated",
        "prior": "flow",
        "objective": "iwae",
        "particles": 5,
        "epochs": 1000,
        "lr_schedule": "cosine",
        "ema": 0.999,
    },
}

#: One line per preset, for ``--help``.
DESCRIPTIONS: dict[str, str] = {
    "fast": "today's defaults",
    "best": "flow prior, batch size 256, EMA of the weights (0.999)",
    "paper": "gated network, flow prior, IWAE with 5 particles, 1000 epochs, cosine "
    "learning rate, EMA of the weights (0.999)",
}


def preset_options(name: str) -> dict[str, Any]:
    """The train options preset ``name`` sets (a copy); an unknown name is a
    :class:`~pyrovae.errors.ConfigError` listing the known ones."""
    from pyrovae.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return dict(PRESETS[name])


def describe_presets() -> str:
    """``fast: ...; best: ...; paper: ...``, for the option's help."""
    return "; ".join(f"{name}: {DESCRIPTIONS[name]}" for name in PRESETS)
