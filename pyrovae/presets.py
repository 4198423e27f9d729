"""Named training configurations: ``pyrovae train --preset NAME``.

A preset sets the defaults of some train options; options given on the
command line, and keys of a ``--config`` file, override them. The preset's
name is recorded in the run's config (``train.preset``) beside the resolved
options, so ``pyrovae train --config RUN/config.toml`` trains the same run.

======  ============================================================  =========================
name    what it sets                                                   for
======  ============================================================  =========================
fast    nothing: today's defaults (Gaussian prior, ELBO, 30 epochs)    a first look, tests
best    ``--prior flow --objective iwae --particles 5``                quality at a fixed budget
paper   best's, ``--epochs 1000 --lr-schedule cosine --ema 0.99``      the longest budget
======  ============================================================  =========================

``best`` (for a budget of minutes) is a learned flow prior (Papamakarios et al. 2017) and the
importance-weighted bound of Burda et al. (2016) with 5 samples: in
``benchmarks/flows.py`` (5 epochs of Fashion-MNIST) the flow prior raised test
log p(x) most (+2.6 nats) and IWAE a little (+0.2). It sets no EMA of the
weights: measured on the digits (docs/benchmarks.md, "Free bits and EMA on
digits"), an EMA lowered log p(x) of 30-epoch runs, still improving when they
stop (0.99: -0.43 nats; 0.999: -8.7), and raised it only in 200-epoch runs
(0.99: +0.05), which is why ``paper``, the long run, sets it. No preset sets
free bits, which needs a per-dimension analytic KL that the flow prior has not
(with a Gaussian prior and 50 latent dimensions, 0.25 nats raised log p(x) by
0.18).

This module imports nothing heavy: ``pyrovae train --help`` lists the presets.
"""

from __future__ import annotations

from typing import Any

_BEST: dict[str, Any] = {"prior": "flow", "objective": "iwae", "particles": 5}

#: Each preset's train options, keyed by option name (as in a ``--config`` file).
PRESETS: dict[str, dict[str, Any]] = {
    "fast": {},
    "best": dict(_BEST),
    "paper": {**_BEST, "epochs": 1000, "lr_schedule": "cosine", "ema": 0.99},
}

#: One line per preset, for ``--help``.
DESCRIPTIONS: dict[str, str] = {
    "fast": "today's defaults",
    "best": "flow prior, IWAE with 5 particles",
    "paper": "best's for 1000 epochs, cosine learning rate, EMA of the weights (0.99)",
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
