"""The conditional VAE: p(x|y,z) p(z) with the guide q(z|x,y), for a class label y.

Sohn, Lee & Yan (2015), "Learning Structured Output Representation using Deep
Conditional Generative Models"; the same generative network is the labelled
half of Kingma et al. (2014)'s M2 (:mod:`pyrovae.model.semi_supervised`), which
builds on :class:`LabelledVAE` here.

The run's network component is built for codes of size ``n_latent + n_classes``:
its decoder reads ``[z, onehot(y)]``, its encoder gives features h(x), and the
Gaussian guide head reads ``[h(x), onehot(y)]``. The likelihood and prior are
the run's components. Every shape broadcasts over leading dimensions, so a
label enumerated by Pyro (shape ``(n_classes, 1)``) needs no special casing.

Example
-------
>>> config = ModelConfig(kind="cvae", data_shape=(1, 8, 8), latent_dim=2, n_classes=10)
>>> cvae = ConditionalVAE(config)
>>> x, y = torch.rand(5, 1, 8, 8).round(), torch.tensor([0, 1, 2, 3, 4])
>>> loss = pyro.infer.Trace_ELBO().differentiable_loss(cvae.model, cvae.guide, x, y)
>>> threes = cvae.sample(16, label=3)  # (16, 1, 8, 8)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.guides.base import Guide
from pyrovae.model.likelihoods.base import Likelihood
from pyrovae.model.networks.base import Networks
from pyrovae.model.priors.base import Prior
from pyrovae.model.spec import resolve
from pyrovae.model.vae import VAE, _batch_size, _latent_scale
from pyrovae.sites import DATA_PLATE, LATENT, MODULE, OBS

#: The guide head a labelled model takes (it reads [h(x), onehot(y)]).
LABELLED_GUIDES = ("normal",)


def cat_broadcast(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[a, b]`` along the last dimension, leading dimensions broadcast against each other."""
    lead = torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    return torch.cat([a.expand(*lead, a.shape[-1]), b.expand(*lead, b.shape[-1])], dim=-1)


class LabelledVAE(VAE):
    """The parts a model of x and a label y shares: h(x), q(z|x,y) and p(x|y,z).

    Parameters
    ----------
    config
        The model config; ``data_shape`` and ``n_classes`` must be set (they are
        read from the data), the guide must be ``normal`` and the prior must not
        need the posterior (the VampPrior is built on q(z|x)).
    modules
        Not taken: a caller's encoder and decoder do not read labels.
    """

    @classmethod
    def check_config(cls, config: ModelConfig) -> None:
        """Refuse, before any data is read, a guide other than ``normal`` and a prior
        built on q(z|x), with a :class:`~pyrovae.errors.ConfigError`."""
        check_labelled_components(config)

    def __init__(self, config: ModelConfig, *, modules: Networks | None = None) -> None:
        nn.Module.__init__(self)  # VAE.__init__ builds the unconditional networks
        check_labelled_config(config)
        if modules is not None:
            raise ConfigError(f"--model {config.kind} builds its own networks: leave out encoder=")
        assert config.data_shape is not None and config.n_classes is not None
        self.config = config
        self.data_shape = tuple(config.data_shape)
        spec = resolve(config)
        classes: Mapping[str, Any] = spec.classes
        options = spec.options
        wide = dataclasses.replace(spec.context, n_latent=config.latent_dim + config.n_classes)
        self.encoder_z, self.decoder = classes["network"](**options["network"]).build(wide)
        features = int(self.encoder_z.out_features) + config.n_classes
        self.z_head: Guide = classes["guide"](spec.context, features, **options["guide"])
        self.likelihood: Likelihood = classes["likelihood"](spec.context, **options["likelihood"])
        self.prior: Prior = classes["prior"](spec.context, **options["prior"])

    @property
    def n_classes(self) -> int:
        assert self.config.n_classes is not None  # checked in __init__
        return self.config.n_classes

    @property
    def encoder(self) -> nn.Module:
        """The network x -> h(x) that q(z|x,y) reads."""
        return self.encoder_z

    @property
    def guide_net(self) -> Guide:
        """The Gaussian head [h(x), onehot(y)] -> q(z|x,y)."""
        return self.z_head

    def one_hot(self, y: torch.Tensor) -> torch.Tensor:
        """``(..., n_classes)`` float one-hot codes of the labels ``y``."""
        return F.one_hot(y.long(), self.n_classes).to(self._dtype)

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def check_labels(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` if every label is a class of the model, else a :class:`ConfigError`."""
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.n_classes):
            raise ConfigError(
                f"labels must be 0 to {self.n_classes - 1} (the run's classes), "
                f"got {int(y.min())} to {int(y.max())}"
            )
        return y

    def qz(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z|x,y) for images ``(batch, *data_shape)``, labels broadcasting with ``(batch,)``."""
        if y is None:
            raise ConfigError(f"q(z|x,y) of a {self.config.kind} model needs the labels y")
        return self.z_head(cat_broadcast(self.encoder_z(x), self.one_hot(y)))

    def px(self, z: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """p(x|y,z) for codes ``(..., n_latent)`` and labels broadcasting with ``(...)``.

        Without ``y``, p(x|z) = sum_y p(y) p(x|y,z) with the label summed out
        under the uniform p(y) (a mixture over the classes): what importance
        sampling of log p(x) scores.
        """
        if y is not None:
            return self.likelihood(self.decoder(cat_broadcast(z, self.one_hot(y))))
        classes = torch.arange(self.n_classes, device=z.device)  # (K,)
        components = self.px(z.unsqueeze(-2), classes)  # batch (..., K)
        uniform = dist.Categorical(logits=torch.zeros(self.n_classes, device=z.device))
        return dist.MixtureSameFamily(uniform, components)

    def labels_for(self, n: int, label: int | None, device: torch.device) -> torch.Tensor:
        """``n`` labels: all ``label``, or by default the classes in turn (0, 1, ..., 0, ...)."""
        if label is None:
            return torch.arange(n, device=device) % self.n_classes
        if not 0 <= label < self.n_classes:
            raise ConfigError(f"--label must be from 0 to {self.n_classes - 1}, got {label}")
        return torch.full((n,), label, dtype=torch.long, device=device)

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, mean: bool = True, *, label: int | None = None
    ) -> torch.Tensor:
        """``n`` images of class ``label`` (default: the classes in turn), z ~ p(z)."""
        z = self.prior.sample(n, temperature)  # (n, n_latent)
        px = self.px(z, self.labels_for(n, label, z.device))
        return px.mean if mean else px.sample()


def check_labelled_config(config: ModelConfig) -> None:
    """Refuse what a labelled model cannot be built with, in one line."""
    if config.data_shape is None:
        raise ConfigError("the model config has no data_shape; it is read from the data")
    if config.n_classes is None or config.n_classes < 2:
        raise ConfigError(
            f"--model {config.kind} needs at least two classes, read from the data's labels"
        )
    check_labelled_components(config)


def check_labelled_components(config: ModelConfig) -> None:
    """Refuse a guide and a prior a labelled model cannot take, in one line."""
    if config.guide not in LABELLED_GUIDES:
        raise ConfigError(
            f"--model {config.kind} takes the guide {' or '.join(LABELLED_GUIDES)}, "
            f"got {config.guide!r}: leave out --guide"
        )
    classes: Mapping[str, Any] = resolve(config).classes
    if classes["prior"].needs_posterior:
        raise ConfigError(
            f"--model {config.kind} cannot take the prior {config.prior!r}: it is built on "
            "q(z|x), which a labelled model replaces with q(z|x,y); choose another --prior"
        )


class ConditionalVAE(LabelledVAE):
    """p(y-given) p(z) p(x|y,z) and q(z|x,y): every training point has its label."""

    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """z ~ p(z), x ~ p(x|y,z) over a batch, given the labels ``y`` ``(batch,)``."""
        pyro.module(MODULE, self)
        if y is None:
            raise ConfigError("a conditional VAE's model needs the labels y")
        n = _batch_size(x, batch_size if batch_size is not None else y.shape[0])
        with pyro.plate(DATA_PLATE, n, dim=-1):
            with _latent_scale(beta):
                z = pyro.sample(LATENT, self.prior())  # (batch, n_latent)
            pyro.sample(OBS, self.px(z, y), obs=x if observe else None)
        return z

    def guide(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """q(z|x,y) for the images ``x`` and labels ``y``."""
        if x is None:
            raise ConfigError("the guide q(z|x,y) needs images x")
        pyro.module(MODULE, self)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1), _latent_scale(beta):
            return pyro.sample(LATENT, self.qz(x, y))  # (batch, n_latent)

    def log_joint(
        self, x: torch.Tensor, z: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise ConfigError(
            "a conditional VAE models p(x|y), not p(x): log p(x) needs a label prior "
            "(train --model m2 for one)"
        )

    def elbo_terms(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One-draw E_q[log p(x|y,z)] and KL(q(z|x,y) || p(z)), each ``(batch,)``: the KL in
        closed form where it has one, else from the same draw (:func:`kl_or_draw`)."""
        qz = self.qz(x, y)
        z = qz.sample()
        return self.px(z, y).log_prob(x), kl_or_draw(qz, self.prior(), z)

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, mean: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images decoded from z ~ q(z|x,y); without labels, y is the class whose
        one-draw ELBO is highest (Bayes' rule under a uniform label prior)."""
        if y is None:
            y = self.most_likely_class(x)
        px = self.px(self.qz(x, y).sample(), y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def most_likely_class(self, x: torch.Tensor) -> torch.Tensor:
        """argmax_y of the one-draw ELBO of (x, y), ``(batch,)``."""
        classes = torch.arange(self.n_classes, device=x.device).unsqueeze(-1)  # (K, 1)
        recon, kl = self.elbo_terms(x, classes)  # (K, batch)
        return (recon - kl).argmax(0)


def kl_or_draw(
    qz: dist.TorchDistribution, prior: dist.TorchDistribution, z: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) in closed form where torch has it (a Normal guide and prior), else the
    one-draw estimate log q(z) - log p(z) at ``z`` ~ q (a flow, learned or hierarchical
    prior), batch-shaped like ``qz``."""
    try:
        return torch.distributions.kl_divergence(qz, prior.expand(qz.batch_shape))
    except NotImplementedError:
        return qz.log_prob(z) - prior.log_prob(z)
