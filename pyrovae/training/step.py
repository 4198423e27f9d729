"""The training step: one Adam update on a minibatch's ELBO, at the speed of plain PyTorch.

What :class:`pyro.infer.SVI` does each step -- trace the guide, replay the
model on it, build the ELBO from the two traces, let the param store's
per-parameter optimizers update -- costs Python time that a hand-written
PyTorch loop does not spend. Measured on CPU (``benchmarks/train_throughput.py``),
the plain Pyro step runs at about 0.75-0.85x the images/s of such a loop.
Three changes close the gap and keep the numbers:

1. **The ELBO evaluated from the model's own distributions.** When the
   objective is a plain :class:`~pyro.infer.TraceMeanField_ELBO` or
   :class:`~pyro.infer.Trace_ELBO` (one or vectorized particles), the step
   evaluates the same estimator straight from the distributions that
   ``VAE.model`` and ``VAE.guide`` put at their sites -- ``vae.qz(x)``,
   ``vae.prior()``, ``vae.px(z)`` -- with the same reparameterized draw
   (same random numbers, in the same order), the same analytic KL where
   torch registers one and the same one-sample ``log q - log p`` otherwise,
   and the same β-scaling of the latent site (β is an argument of the step,
   passed on to ``VAE.model`` and ``VAE.guide``). On the first batch the step
   checks that this equals Pyro's ``differentiable_loss`` on identical random
   numbers and falls back to Pyro's estimator if it does not; any other
   objective (e.g. an importance-weighted bound) always uses Pyro's
   ``differentiable_loss``.
2. **Validation off inside the hot loop** (``pyro.validation_enabled(False)``):
   the data were checked once before training (finite, in [0, 1], binary for
   binary likelihoods), so per-step support checks (each a pass over the
   batch plus a host synchronization) only cost time.
3. **One fused Adam** over all parameters (``torch.optim.Adam(fused=True)``),
   one kernel per step instead of a handful per parameter tensor.

No per-step host synchronization: the step returns the summed loss as a
device tensor; the loop accumulates it on the device and reads it rarely.
Tests (``tests/test_step.py``) check that the fast step gives the loss and
gradients of :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam` for every
registered guide and prior.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.data.dataset import Rows
from pyrovae.data.pixels import to_unit_float
from pyrovae.model.vae import VAE
from pyrovae.runtime import forked_rng, module_device
from pyrovae.training.batches import batch_indices, memory_batches, streamed_batches

#: Objectives whose estimator the direct evaluation reproduces (exact types:
#: a subclass may change the estimator, so it takes Pyro's path).
DIRECT_OBJECTIVES: tuple[type[ELBO], ...] = (TraceMeanField_ELBO, Trace_ELBO)
#: Running loss is read back from the device every this many steps, not every step.
LOG_EVERY = 25

GradientHook = Callable[[Sequence[nn.Parameter]], None]


def make_optimizer(parameters: Iterable[nn.Parameter], lr: float) -> torch.optim.Adam:
    """Adam over ``parameters``, fused into one kernel where the device supports it."""
    parameters = list(parameters)
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except RuntimeError:  # a device or dtype without a fused kernel
        return torch.optim.Adam(parameters, lr=lr)


def direct_applies(objective: ELBO) -> bool:
    """Whether the direct evaluation reproduces ``objective``'s estimator."""
    particles = getattr(objective, "num_particles", 1)
    vectorized = getattr(objective, "vectorize_particles", False)
    return type(objective) in DIRECT_OBJECTIVES and (particles == 1 or vectorized)


class TrainStep:
    """One optimization step of the negative ELBO on a minibatch.

    Parameters
    ----------
    vae
        The model and guide.
    objective
        A Pyro ELBO (see :func:`pyrovae.inference.objectives.make_objective`).
    optimizer
        A torch optimizer over ``vae.parameters()``.
    fast
        Use the direct evaluation of the ELBO when it applies (see the module
        docstring); ``False`` always runs Pyro's ``differentiable_loss``.
    gradient_hook
        Called on the parameters after ``backward`` and before the update;
        data-parallel training all-reduces the gradients there.

    Attributes
    ----------
    direct
        Whether the step evaluates the ELBO directly; ``None`` until the first
        step has checked it against Pyro's estimator.

    Example
    -------
    >>> step = TrainStep(vae, make_objective(config.train), make_optimizer(vae.parameters(), 1e-3))
    >>> loss_sum = step(x)  # one Adam update; the batch's summed loss, on x's device
    >>> loss_sum = step(x, beta=0.1)  # the KL term weighted by 0.1 (warm-up)
    """

    def __init__(
        self,
        vae: VAE,
        objective: ELBO,
        optimizer: torch.optim.Optimizer,
        *,
        fast: bool = True,
        gradient_hook: GradientHook | None = None,
    ) -> None:
        self.vae = vae
        self.objective = objective
        self.optimizer = optimizer
        self.gradient_hook = gradient_hook
        self.direct: bool | None = None if fast and direct_applies(objective) else False
        self._parameters = [p for p in vae.parameters() if p.requires_grad]

    #: The training points' labels ``(N,)``, for a step that trains on them
    #: (:mod:`pyrovae.training.labelled`); :func:`train_epoch` then passes each
    #: batch's labels as ``y``.
    labels: torch.Tensor | None = None

    def loss(
        self, x: torch.Tensor, *, beta: float = 1.0, y: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The objective's loss on ``x`` with the KL term weighted by ``beta``, summed
        over the batch (differentiable). A VAE takes no labels ``y``."""
        if y is not None:
            raise ValueError("a VAE's step takes no labels")
        if self.direct is None:
            self.direct = self._direct_matches_pyro(x, beta)
        if self.direct:
            return self._direct_loss(x, beta)
        return self._pyro_loss(x, beta)

    def __call__(
        self,
        x: torch.Tensor,
        n_total: int | None = None,
        *,
        beta: float = 1.0,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One update on the mean loss; returns the summed loss, detached, on the device.

        ``n_total`` is the number of data points the mean is over; it exceeds
        ``x.shape[0]`` when ``x`` is this process's shard of a global batch.
        ``beta`` weights the KL term (the latent site; KL warm-up, β-VAE);
        ``y`` are the batch's labels, for a step that has :attr:`labels`.
        """
        n_total = x.shape[0] if n_total is None else n_total
        self.optimizer.zero_grad(set_to_none=True)
        if x.shape[0] > 0:
            loss = self.loss(x, beta=beta, y=y)
            (loss / n_total).backward()
        else:  # an empty shard of a short last batch still joins the all-reduce
            loss = torch.zeros((), device=x.device)
            for p in self._parameters:
                p.grad = torch.zeros_like(p)
        if self.gradient_hook is not None:
            self.gradient_hook(self._parameters)
        self.optimizer.step()
        return loss.detach()

    def _pyro_loss(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        # Every objective make_objective returns has it (Pyro's base ELBO does not declare it).
        objective: Any = self.objective
        # Pyro passes keyword arguments on to the model and guide; at β = 1 none is
        # passed, so a model without a beta argument still trains.
        options = {} if beta == 1.0 else {"beta": beta}
        return objective.differentiable_loss(self.vae.model, self.vae.guide, x, **options)

    def _direct_loss(self, x: torch.Tensor, beta: float) -> torch.Tensor:
        vae, objective = self.vae, self.objective
        particles = objective.num_particles
        qz = vae.qz(x)  # batch (batch,), event (n_latent,)
        # The draws Pyro's guide site makes: rsample() or, under the vectorized
        # particle plate, rsample of the (particles, batch) expansion.
        z = qz.rsample() if particles == 1 else qz.rsample((particles,))
        log_px = vae.px(z).log_prob(x)  # (batch,) or (particles, batch)
        pz = vae.prior().expand(qz.batch_shape)
        kl: torch.Tensor | None = None
        if type(objective) is TraceMeanField_ELBO:
            try:
                kl = kl_divergence(qz, pz).sum() * particles
            except NotImplementedError:
                kl = None
        if kl is None:
            kl = (qz.log_prob(z) - pz.log_prob(z)).sum()
        return -(log_px.sum() - (kl if beta == 1.0 else beta * kl)) / particles

    def _direct_matches_pyro(self, x: torch.Tensor, beta: float) -> bool:
        """Compare the two estimators on ``x`` with the same random numbers.

        The RNG state is restored afterwards, so the check consumes no
        randomness and training stays reproducible.
        """
        if x.shape[0] == 0 or not self.vae.qz(x[:1]).has_rsample:
            return False
        with torch.no_grad(), forked_rng(x.device) as rewind:
            try:
                direct = self._direct_loss(x, beta)
            except (RuntimeError, ValueError, NotImplementedError):
                return False  # a component the direct evaluation cannot broadcast
            rewind()
            reference = self._pyro_loss(x, beta)
        matches = bool(torch.isclose(direct, reference, rtol=1e-5, atol=1e-4 * x.shape[0]))
        if not matches:
            warnings.warn(
                f"the direct ELBO evaluation ({direct.item():.6g}) differs from Pyro's estimator "
                f"({reference.item():.6g}) on the first batch; training with Pyro's (slower) "
                "estimator instead",
                RuntimeWarning,
                stacklevel=2,
            )
        return matches


def train_epoch(
    step: TrainStep,
    images: torch.Tensor | Rows,
    order: torch.Tensor,
    batch_size: int,
    *,
    binarize: bool,
    beta: Callable[[int], float] | None = None,
    shard: tuple[int, int] = (0, 1),
    steps: Iterable[int] | None = None,
    on_log: Callable[[int, torch.Tensor], None] | None = None,
    workers: int | None = None,
) -> torch.Tensor:
    """One pass over ``images`` in the order ``order``; the summed loss on the device.

    Parameters
    ----------
    step
        The training step.
    images
        The training set as stored (uint8 or float): a tensor on the training
        device, or rows streamed from disk (:mod:`pyrovae.data.streams`).
    order
        A permutation of the indices of ``images`` (on the training device for
        a tensor, anywhere for streamed rows).
    batch_size
        Global batch size: data points per update over all processes.
    binarize
        Draw each batch's values as Bernoulli(intensity) (dynamic binarization).
    beta
        ``beta(step)`` is the KL weight at this epoch's step ``step``.
    shard
        ``(rank, world_size)``: this process takes the rank-th contiguous part
        of every global batch.
    steps
        The step indices 0, 1, ... of the epoch, one per batch (e.g. a progress
        bar over them); default all.
    on_log
        Called as ``on_log(step, summed_loss)`` every :data:`LOG_EVERY` steps;
        reading the tensor there is the only host synchronization.
    workers
        Processes reading streamed rows ahead (default
        :func:`pyrovae.training.batches.default_workers`).

    Returns
    -------
    torch.Tensor
        This process's summed loss over the epoch, a 0-dim tensor.
    """
    device = module_device(step.vae)
    if isinstance(images, torch.Tensor):
        batches = memory_batches(images, order, batch_size, shard)
    else:
        batches = streamed_batches(images, order, batch_size, shard, device, workers)
    total = torch.zeros((), device=device)
    labels = label_batches(step.labels, order, batch_size, shard)
    # The data were validated before training; per-step support checks only cost time.
    with pyro.validation_enabled(False):
        for i, (batch, n_total), y in zip(
            steps or itertools.count(), batches, labels, strict=False
        ):
            x = to_unit_float(batch)  # (batch, *data_shape)
            if binarize:
                x = torch.bernoulli(x)
            weight = 1.0 if beta is None else beta(i)
            # Only a step with labels takes them (a step of a plain VAE has no ``y``).
            total += (
                step(x, n_total, beta=weight) if y is None else step(x, n_total, beta=weight, y=y)
            )
            if on_log is not None and i % LOG_EVERY == LOG_EVERY - 1:
                on_log(i, total)
    return total


def label_batches(
    labels: torch.Tensor | None, order: torch.Tensor, batch_size: int, shard: tuple[int, int]
) -> Iterator[torch.Tensor | None]:
    """The labels of each of this process's batches (those of :func:`memory_batches`
    and :func:`streamed_batches`, in the same order); ``None`` for ever without labels."""
    if labels is None:
        yield from itertools.repeat(None)
        return
    for index, _ in batch_indices(order, batch_size, shard):
        yield labels[index.to(labels.device)]
