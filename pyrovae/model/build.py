"""Building a VAE from its config: checked with its components, and against memory.

:func:`check_model_config` runs every component's checks before any data is
read. :func:`build_vae` first checks that the model fits in memory.

``--latent-dim 2000000000`` or ``--hidden 2000000000`` asks for terabytes of
parameters: allocating them fails with an allocator traceback, or (on a
machine that overcommits) succeeds until the kernel kills the process. The
parameters are counted first on PyTorch's ``meta`` device, which allocates
nothing, and compared with the free memory of the training device.
"""

from __future__ import annotations

import dataclasses
import os

import torch

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError, first_line
from pyrovae.model.autoencoder import Autoencoder
from pyrovae.model.conditional import ConditionalVAE
from pyrovae.model.networks.base import Networks
from pyrovae.model.semi_supervised import SemiSupervisedVAE
from pyrovae.model.spec import resolve
from pyrovae.model.vae import VAE
from pyrovae.runtime import is_out_of_memory

#: The class that builds each model kind (``ModelConfig.kind``, ``--model``).
#: The class of each model kind (``--model``; see :data:`pyrovae.config.MODEL_KINDS`).
MODEL_CLASSES: dict[str, type[VAE]] = {
    "vae": VAE,
    "ae": Autoencoder,
    "cvae": ConditionalVAE,
    "m2": SemiSupervisedVAE,
}

#: Bytes per parameter in training: the value, its gradient and Adam's two moments (float32).
TRAIN_BYTES_PER_PARAMETER = 16


def check_model_config(config: ModelConfig) -> None:
    """Check ``config`` with its components (names, options, combinations) before any
    data is read; see :func:`pyrovae.model.spec.resolve`."""
    resolve(config)
    MODEL_CLASSES[config.kind].check_config(config)


def make_model(config: ModelConfig, *, modules: Networks | None = None) -> VAE:
    """The model of ``config.kind`` (:data:`MODEL_CLASSES`)."""
    return MODEL_CLASSES[config.kind](config, modules=modules)


def build_vae(config: ModelConfig, device: torch.device, *, modules: Networks | None = None) -> VAE:
    """The VAE of ``config`` on ``device``; one too large for the device's memory is a
    :class:`ConfigError`, found before allocating where the size can be counted.
    ``modules`` are a caller's own encoder and decoder (the ``module`` network)."""
    if modules is None:
        check_fits_in_memory(config, device)
    try:
        return make_model(config, modules=modules).to(device)
    except (RuntimeError, MemoryError) as err:
        if not is_out_of_memory(err):
            raise
        raise ConfigError(
            f"the model does not fit in memory ({first_line(err, 120)}): lower {size_flags(config)}"
        ) from None


def check_fits_in_memory(config: ModelConfig, device: torch.device) -> None:
    """Raise :class:`ConfigError` when training the model needs more memory than is free.

    Only the parameters are counted (activations are not), for one process.
    """
    n_parameters = parameter_count(config)
    available = available_memory(device)
    need = n_parameters * TRAIN_BYTES_PER_PARAMETER
    if available is not None and need > available:
        raise ConfigError(
            f"the model has {n_parameters:.3g} parameters, which need about "
            f"{_bytes(need)} to train (values, gradients and Adam's moments), but {device} has "
            f"{_bytes(available)} free: lower {size_flags(config)}"
        )


def size_flags(config: ModelConfig) -> str:
    """The options that size the model, as flags: every count or list of sizes its
    components declare (``--hidden``, ``--channels-base``, ``--prior-components``,
    ``--ar-channels``, ...; an option's ``sizes_model`` says otherwise) and
    ``--latent-dim``, for a message saying what to lower."""
    classes = resolve(config).classes
    flags = []
    for kind in ("network", "likelihood", "guide", "prior"):
        for option in getattr(classes[kind], "options", ()):
            sized = option.sizes_model
            if sized is None:  # undeclared: a count or a list of sizes
                sized = isinstance(option.default, tuple) or type(option.default) is int
            flag = "--" + option.name.replace("_", "-")
            if sized and flag not in flags:
                flags.append(flag)
    flags.append("--latent-dim")
    return ", ".join(flags[:-1]) + " or " + flags[-1]


def parameter_count(config: ModelConfig) -> int:
    """Parameters of ``VAE(config)`` (at least), counted without allocating them.

    Components that cannot be built on the ``meta`` device (flows that read a
    tensor's value while they are built) are counted as the Gaussian guide and
    prior: a lower bound, dominated anyway by the encoder and decoder.
    """
    options = {k: v for k, v in config.options.items() if k not in ("guide", "prior")}
    plain = dataclasses.replace(config, guide="normal", prior="normal", options=options)
    for candidate in (config, plain):
        try:
            with torch.device("meta"):
                return sum(p.numel() for p in VAE(candidate).parameters())
        except (RuntimeError, NotImplementedError, ValueError, TypeError):
            continue
    return 0


def available_memory(device: torch.device) -> int | None:
    """Free bytes on ``device`` (for the CPU, the machine's available memory), if known."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"
