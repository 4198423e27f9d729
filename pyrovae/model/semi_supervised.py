"""The semi-supervised VAE M2 of Kingma, Rezende, Mohamed & Welling (2014),
"Semi-Supervised Learning with Deep Generative Models", as in Pyro's
``examples/vae/ss_vae_M2.py``.

p(y) p(z) p(x|y,z) with p(y) uniform over the classes; the guide is
q(y|x) q(z|x,y). A labelled point observes y in the model (the guide has no
``"y"`` site); for an unlabelled one, y is a latent categorical that the guide
marks ``infer={"enumerate": "parallel"}``, so that :class:`pyro.infer.TraceEnum_ELBO`
sums over the classes exactly instead of sampling y. The auxiliary loss
-alpha log q(y|x) on labelled points (:meth:`SemiSupervisedVAE.classification_loss`)
trains the classifier on the labels as well (Kingma et al.'s J^alpha).

Example
-------
>>> m2 = SemiSupervisedVAE(ModelConfig(kind="m2", data_shape=(1, 8, 8), latent_dim=2, n_classes=10))
>>> elbo = pyro.infer.TraceEnum_ELBO(max_plate_nesting=1)
>>> unlabelled = elbo.differentiable_loss(m2.model, m2.guide, x)       # y summed out
>>> labelled = elbo.differentiable_loss(m2.model, m2.guide, x, y)      # y observed
>>> m2.qy(x).probs                                                      # (batch, n_classes)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from torch import nn

from pyrovae.config import ModelConfig
from pyrovae.errors import ConfigError
from pyrovae.model.conditional import LabelledVAE, cat_broadcast, kl_or_draw
from pyrovae.model.networks.base import Networks
from pyrovae.model.spec import resolve
from pyrovae.model.vae import _batch_size, _latent_scale
from pyrovae.sites import DATA_PLATE, LABEL, LATENT, MODULE, OBS


class SemiSupervisedVAE(LabelledVAE):
    """M2: a classifier q(y|x), and q(z|x,y), p(x|y,z) of :class:`LabelledVAE`.

    The classifier is a second encoder of the run's network component (its
    own weights) followed by a linear map to the class logits.
    """

    def __init__(self, config: ModelConfig, *, modules: Networks | None = None) -> None:
        super().__init__(config, modules=modules)
        spec = resolve(config)
        classes: Mapping[str, Any] = spec.classes
        trunk, _ = classes["network"](**spec.options["network"]).build(spec.context)
        self.classifier = nn.Sequential(trunk, nn.Linear(int(trunk.out_features), self.n_classes))

    def qy(self, x: torch.Tensor) -> dist.Categorical:
        """q(y|x), batch ``(batch,)``."""
        return dist.Categorical(logits=self.classifier(x))  # logits (batch, n_classes)

    def py(self) -> dist.Categorical:
        """The uniform label prior p(y)."""
        probs = torch.full((self.n_classes,), 1.0 / self.n_classes, device=self._device)
        return dist.Categorical(probs=probs)

    @property
    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def model(
        self,
        x: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
        *,
        beta: float = 1.0,
        batch_size: int | None = None,
        observe: bool = True,
    ) -> torch.Tensor:
        """y ~ p(y) (observed at ``y`` when given), z ~ p(z), x ~ p(x|y,z)."""
        pyro.module(MODULE, self)
        n = _batch_size(x, batch_size if batch_size is not None or y is None else y.shape[0])
        with pyro.plate(DATA_PLATE, n, dim=-1):
            y = pyro.sample(LABEL, self.py(), obs=y)  # (batch,), or (n_classes, 1) enumerated
            with _latent_scale(beta):
                z = pyro.sample(LATENT, self.prior())  # (..., batch, n_latent)
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
        """q(y|x), enumerated in parallel where ``y`` is not given, then q(z|x,y)."""
        if x is None:
            raise ConfigError("the guide q(y|x) q(z|x,y) needs images x")
        pyro.module(MODULE, self)
        with pyro.plate(DATA_PLATE, x.shape[0], dim=-1):
            if y is None:
                y = pyro.sample(LABEL, self.qy(x), infer={"enumerate": "parallel"})
            with _latent_scale(beta):
                return pyro.sample(LATENT, self.qz(x, y))

    def classification_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """-log q(y|x) of each labelled point, ``(batch,)``."""
        return -self.qy(x).log_prob(y)

    def qz(self, x: torch.Tensor, y: torch.Tensor | None = None) -> dist.TorchDistribution:
        """q(z|x,y); without ``y``, the mixture sum_y q(y|x) q(z|x,y) (the marginal
        q(z|x) that importance sampling of log p(x) proposes from, with
        :meth:`px` summing y out of p(x|y,z))."""
        if y is not None:
            return super().qz(x, y)
        codes = self.one_hot(torch.arange(self.n_classes, device=x.device))  # (K, K)
        h = self.encoder_z(x).unsqueeze(-2)  # (batch, 1, F)
        components = self.z_head(cat_broadcast(h, codes))  # batch (batch, K)
        return dist.MixtureSameFamily(dist.Categorical(logits=self.qy(x).logits), components)

    def unlabelled_terms(
        self, x: torch.Tensor, *, analytic_kl: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """E_q[log p(x|y,z)] and KL(q(y,z|x) || p(y,z)) of unlabelled images, each ``(batch,)``.

        The sum over classes is exact; z is drawn once per class (a
        ``(n_classes, batch, n_latent)`` draw, as Pyro's parallel enumeration
        draws it). ``analytic_kl`` takes KL(q(z|x,y) || p(z)) in closed form
        rather than from that draw, where it has one (:func:`kl_or_draw`).
        """
        classes = torch.arange(self.n_classes, device=x.device).unsqueeze(-1)  # (K, 1)
        qz = self.qz(x, classes)  # batch (K, batch)
        z = qz.rsample()  # (K, batch, n_latent)
        recon_y = self.px(z, classes).log_prob(x)  # (K, batch)
        if analytic_kl:
            kl_z = kl_or_draw(qz, self.prior(), z)
        else:
            kl_z = qz.log_prob(z) - self.prior().log_prob(z)
        qy = self.qy(x)
        weights = qy.probs.T  # (K, batch)
        recon = (weights * recon_y).sum(0)
        kl_y = (weights * (qy.logits.T - self.py().logits.unsqueeze(-1))).sum(0)
        return recon, (weights * kl_z).sum(0) + kl_y

    @torch.no_grad()
    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities q(y|x), ``(batch, n_classes)``."""
        return self.qy(x).probs

    @torch.no_grad()
    def sample(
        self, n: int, temperature: float = 1.0, mean: bool = True, *, label: int | None = None
    ) -> torch.Tensor:
        """``n`` images of class ``label``, or of labels y ~ p(y) by default; z ~ p(z)."""
        z = self.prior.sample(n, temperature)  # (n, n_latent)
        if label is None:
            y = self.py().sample((n,))
        else:
            y = self.labels_for(n, label, z.device)
        px = self.px(z, y)
        return px.mean if mean else px.sample()

    @torch.no_grad()
    def reconstruct(
        self, x: torch.Tensor, mean: bool = True, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Images decoded from z ~ q(z|x,y), y the classifier's most probable class by default."""
        y = self.qy(x).probs.argmax(-1) if y is None else y
        px = self.px(self.qz(x, y).sample(), y)
        return px.mean if mean else px.sample()
