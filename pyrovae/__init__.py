"""pyrovae: variational autoencoders written the probabilistic-programming way.

The generative model p(z) p(x|z) and the amortized guide q(z|x) are Pyro
functions (:class:`pyrovae.model.VAE`); training is stochastic variational
inference (:mod:`pyrovae.train`); likelihoods, priors and guides are
registries (:mod:`pyrovae.likelihoods`, :mod:`pyrovae.priors`,
:mod:`pyrovae.guides`).

Example
-------
>>> import pyrovae
>>> result = pyrovae.train(pyrovae.RunConfig())   # digits, Bernoulli
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
    "VAE": "pyrovae.model",
    "train": "pyrovae.training",
    "resume": "pyrovae.training",
    "TrainResult": "pyrovae.training",
    "Run": "pyrovae.api",
    "load_run": "pyrovae.api",
    "latest_run": "pyrovae.api",
    "sample": "pyrovae.api",
    "reconstruct": "pyrovae.api",
    "load_dataset": "pyrovae.data",
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
    "latest_run",
    "load_dataset",
    "load_run",
    "reconstruct",
    "resume",
    "sample",
    "train",
]

if TYPE_CHECKING:
    from pyrovae.api import Run, latest_run, load_run, reconstruct, sample
    from pyrovae.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from pyrovae.data import load_dataset
    from pyrovae.errors import PyrovaeError
    from pyrovae.model import VAE
    from pyrovae.training import TrainResult, resume, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")
