"""pyrovae: variational autoencoders written the probabilistic-programming way.

The generative model p(z) p(x|z) and the amortized guide q(z|x) are Pyro
functions (:class:`pyrovae.model.vae.VAE`); training is stochastic variational
inference (:func:`pyrovae.api.train`, :mod:`pyrovae.training`); networks,
likelihoods, priors and guides are components that describe themselves
(:mod:`pyrovae.components`), pyrovae's own and installed plugins' alike.

Example
-------
>>> import pyrovae
>>> result = pyrovae.train(epochs=5, latent_dim=8)   # digits, Bernoulli
>>> run = pyrovae.load_run(result.run_dir)
>>> images = pyrovae.sample(run, n=64)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Attributes resolve lazily so that `import pyrovae` (and so `pyrovae --help`)
# does not import torch and Pyro.
_EXPORTS = {
    "RunConfig": "pyrovae.config",
    "DataConfig": "pyrovae.config",
    "ModelConfig": "pyrovae.config",
    "TrainConfig": "pyrovae.config",
    "VAE": "pyrovae.model.vae",
    "train": "pyrovae.api",
    "resume": "pyrovae.api",
    "TrainResult": "pyrovae.training.loop",
    "Run": "pyrovae.api",
    "load_run": "pyrovae.api",
    "latest_run": "pyrovae.api",
    "sample": "pyrovae.api",
    "reconstruct": "pyrovae.api",
    "reconstruct_corrupted": "pyrovae.api",
    "configure": "pyrovae.api",
    "evaluate_run": "pyrovae.api",
    "diagnose_run": "pyrovae.api",
    "diagnose_report": "pyrovae.api",
    "encode": "pyrovae.api",
    "probe": "pyrovae.api",
    "explore": "pyrovae.api",
    "impute": "pyrovae.api.impute",
    "classify": "pyrovae.api",
    "load_dataset": "pyrovae.data.load",
    "PyrovaeError": "pyrovae.errors",
}

__all__ = [
    "DataConfig",
    "ModelConfig",
    "PyrovaeError",
    "Run",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "VAE",
    "classify",
    "configure",
    "diagnose_report",
    "diagnose_run",
    "encode",
    "evaluate_run",
    "explore",
    "impute",
    "latest_run",
    "load_dataset",
    "load_run",
    "probe",
    "reconstruct",
    "reconstruct_corrupted",
    "resume",
    "sample",
    "train",
]

if TYPE_CHECKING:
    from pyrovae.api import (
        Run,
        classify,
        configure,
        diagnose_report,
        diagnose_run,
        encode,
        evaluate_run,
        explore,
        latest_run,
        load_run,
        probe,
        reconstruct,
        reconstruct_corrupted,
        resume,
        sample,
        train,
    )
    from pyrovae.api.impute import impute
    from pyrovae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pyrovae.data.load import load_dataset
    from pyrovae.errors import PyrovaeError
    from pyrovae.model.vae import VAE
    from pyrovae.training.loop import TrainResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
