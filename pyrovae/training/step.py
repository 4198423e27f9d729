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
   the data were checked once before training (finite, in the likelihood's
   support: [0, 1] and binary for binary likelihoods), so per-step support
   checks (each a pass over the batch plus a host synchronization) only cost
   time.
3. **One fused Adam** over all parameters (``torch.optim.Adam(fused=True)``),
   one kernel per step instead of a handful per parameter tensor.

No per-step host synchronization: the step returns the summed loss as a
device tensor; the loop accumulates it on the device and reads it rarely.

Denoising and sparsity (both paths): with a ``corruption`` the encoder reads
a fresh corrupted copy x̃ of each batch while the likelihood scores the clean
x (in Pyro's path the guide is handed x̃, the model x); with a ``sparsity``
penalty its weighted KL on the encoder's features h(x̃) is added to the loss
that is differentiated, but not to the returned ELBO loss: it is summed
apart (:meth:`TrainStep.take_sparsity`), so the reported ELBO stays an ELBO.

Free bits and the weight average (both paths): with ``free_bits`` λ > 0 the
loss that is differentiated takes Σ_j max(λ, KL_j) in place of the analytic
KL (:mod:`pyrovae.inference.free_bits`), computed from the q(z|x) the loss
itself used (in Pyro's path, the distribution at the guide's latent site), so
that it costs no second pass of the encoder; the returned loss is the true
negative ELBO. With an :attr:`TrainStep.ema`, the moving average of the
weights is updated after every optimizer step (:mod:`pyrovae.training.ema`).

Tests (``tests/test_step.py``) check that the fast step gives the loss and
gradients of :class:`pyro.infer.SVI` with :class:`pyro.optim.Adam` for every
registered guide and prior.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pyro
import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import kl_divergence

from pyrovae.config import TrainConfig
from pyrovae.data.dataset import Rows
from pyrovae.data.missing import draw_binary_batch
from pyrovae.data.pixels import to_unit_float
from pyrovae.errors import ConfigError
from pyrovae.inference.free_bits import free_bits_excess, per_dimension_kl
from pyrovae.model.corruption import Corruption, parse_corruption
from pyrovae.model.sparsity import SparsityPenalty, recorded_outputs
from pyrovae.model.vae import VAE
from pyrovae.runtime import eval_mode, forked_rng, module_device
from pyrovae.sites import LATENT
from pyrovae.training.acceleration import MixedPrecision
from pyrovae.training.batches import batch_indices, memory_batches, streamed_batches
from pyrovae.training.divergence import check_finite_loss
from pyrovae.training.ema import WeightAverage

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


def check_regularizers(
    config: TrainConfig, value_range: Sequence[float] | None = None
) -> tuple[Corruption | None, SparsityPenalty | None]:
    """The corruption and the sparsity penalty ``config`` asks for (each ``None`` when
    not); a bad ``--corrupt`` or ``--sparsity`` is a :class:`~pyrovae.errors.ConfigError`.
    ``value_range``: the data's where they leave [0, 1] (salt-and-pepper noise's ends)."""
    corruption = parse_corruption(config.corrupt, value_range)
    sparsity = None
    if config.sparsity is None and config.sparsity_weight != TrainConfig.sparsity_weight:
        raise ConfigError("--sparsity-weight weights the --sparsity penalty: give --sparsity too")
    if config.sparsity is not None:
        sparsity = SparsityPenalty(config.sparsity, config.sparsity_weight)
    return corruption, sparsity


def check_free_bits(vae: VAE, free_bits: float) -> None:
    """Refuse ``--free-bits`` for a guide and prior without a per-dimension analytic KL
    (asked of the distributions they make, not of their names)."""
    if not free_bits:
        return
    x = torch.zeros(2, *vae.config.data_shape or (), device=module_device(vae))
    with torch.no_grad(), eval_mode(vae), forked_rng(x.device):
        qz, pz = vae.qz(x), vae.prior()
        try:
            per_dimension_kl(qz, pz.expand(qz.batch_shape))
        except (NotImplementedError, ValueError, RuntimeError):
            raise ConfigError(
                f"--free-bits needs a per-dimension analytic KL, which guide "
                f"{vae.config.guide!r} with prior {vae.config.prior!r} has not: use e.g. "
                "--guide normal --prior normal, or leave out --free-bits"
            ) from None


class _LatentRecorder(Messenger):
    """Keeps the distribution at the latent site of what runs inside it (as broadcast
    by the plates around it): the q(z|x) of Pyro's estimator, for free bits."""

    def __init__(self, seen: list[torch.distributions.Distribution]) -> None:
        super().__init__()
        self.seen = seen

    def _postprocess_message(self, msg: Any) -> None:
        if msg["type"] == "sample" and msg["name"] == LATENT:
            self.seen.append(msg["fn"])


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
    corruption
        Draws the encoder's input x̃ from each batch x (denoising criterion).
    sparsity
        A penalty on the encoder's features, added to the loss that is
        differentiated and summed apart.
    clip_grad_norm
        Scale the gradients down to this global 2-norm when it is larger
        (after the all-reduce, so every process clips alike); 0: never.
    free_bits
        λ of free bits (nats per latent dimension; 0: off): the differentiated
        loss takes Σ_j max(λ, KL_j) in place of the KL.
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
        corruption: Corruption | None = None,
        sparsity: SparsityPenalty | None = None,
        clip_grad_norm: float = 0.0,
        free_bits: float = 0.0,
    ) -> None:
        self.vae = vae
        self.clip_grad_norm = clip_grad_norm
        self.free_bits = free_bits
        # The q(z|x) of the last loss, for free bits (a list: one per guide call).
        self._latents: list[torch.distributions.Distribution] = []
        self.objective = objective
        self.optimizer = optimizer
        self.gradient_hook = gradient_hook
        self.corruption = corruption
        self.sparsity = sparsity
        self._sparsity_sum: torch.Tensor | None = None
        self.direct: bool | None = None if fast and direct_applies(objective) else False
        self._parameters = [p for p in vae.parameters() if p.requires_grad]

    #: The training points' labels ``(N,)``, for a step that trains on them
    #: (:mod:`pyrovae.training.labelled`); :func:`train_epoch` then passes each
    #: batch's labels as ``y``.
    labels: torch.Tensor | None = None
    #: The moving average of the weights, updated after every optimizer step (``--ema``).
    ema: WeightAverage | None = None
    #: Low precision for the networks of the forward pass (``--precision``); ``None``: float32.
    precision: MixedPrecision | None = None

    def loss(
        self,
        x: torch.Tensor,
        *,
        beta: float = 1.0,
        x_in: torch.Tensor | None = None,
        y: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The objective's loss on ``x`` with the KL term weighted by ``beta``, summed
        over the batch (differentiable); the encoder reads ``x_in`` (default ``x``).
        A VAE takes no labels ``y``."""
        if y is not None:
            raise ValueError("a VAE's step takes no labels")
        return self._loss_and_features(x, x if x_in is None else x_in, beta)[0]

    def _loss_and_features(
        self, x: torch.Tensor, x_in: torch.Tensor, beta: float
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The loss, and the encoder's outputs on ``x_in`` made for it (one per guide call)."""
        if self.direct is None:
            self.direct = self._direct_matches_pyro(x, beta, x_in)
        self._latents = []
        if self.direct:
            return self._direct_loss(x, beta, x_in)
        return self._pyro_loss(x, beta, x_in)

    def take_sparsity(self) -> torch.Tensor | None:
        """The sparsity KL summed over the data points since the last call (``None``
        without a penalty); reset to 0."""
        total, self._sparsity_sum = self._sparsity_sum, None
        if total is None and self.sparsity is not None:
            total = torch.zeros((), device=module_device(self.vae))
        return total

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
            with self._low_precision():
                if y is None:
                    x_in = x if self.corruption is None else self.corruption(x)
                    loss, features = self._loss_and_features(x, x_in, beta)
                    trained = self._with_sparsity(loss, features, x.shape[0])
                    trained = self._with_free_bits(trained, beta)
                else:  # a labelled model's step (its own loss; no corruption or sparsity)
                    loss = trained = self.loss(x, beta=beta, y=y)
            (trained / n_total).backward()
        else:  # an empty shard of a short last batch still joins the all-reduce
            loss = torch.zeros((), device=x.device)
            for p in self._parameters:
                p.grad = torch.zeros_like(p)
        if self.gradient_hook is not None:
            self.gradient_hook(self._parameters)
        if self.clip_grad_norm > 0:
            # No host synchronization: torch scales by min(1, max_norm / norm) on the device.
            torch.nn.utils.clip_grad_norm_(self._parameters, self.clip_grad_norm)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.vae)
        return loss.detach()

    def _low_precision(self) -> AbstractContextManager[None]:
        """The networks in low precision within (``--precision``), or nothing."""
        return nullcontext() if self.precision is None else self.precision.active()

    def _with_free_bits(self, loss: torch.Tensor, beta: float) -> torch.Tensor:
        """``loss`` with the KL replaced by the free-bits KL (β-weighted, as the KL is)."""
        latents, self._latents = self._latents, []  # not kept beyond this step
        if not self.free_bits or not latents:
            return loss
        pz = self.vae.prior()
        excesses = [free_bits_excess(qz, pz.expand(qz.batch_shape), self.free_bits)
                    for qz in latents]  # fmt: skip
        excess = torch.stack(excesses).mean()  # over guide calls (one, but for non-vectorized)
        return loss + beta * excess

    def _with_sparsity(
        self, loss: torch.Tensor, features: list[torch.Tensor], n: int
    ) -> torch.Tensor:
        """``loss`` plus the weighted sparsity penalty of ``n`` data points (summed, as
        the loss is); the unweighted KL is added to the running sum."""
        if self.sparsity is None or not features:
            return loss
        kl = torch.stack([self.sparsity.kl(h) for h in features]).mean()
        total = kl.detach() * n
        self._sparsity_sum = total if self._sparsity_sum is None else self._sparsity_sum + total
        return loss + self.sparsity.weight * n * kl

    def _pyro_loss(
        self, x: torch.Tensor, beta: float, x_in: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        # Every objective make_objective returns has it (Pyro's base ELBO does not declare it).
        objective: Any = self.objective
        # Pyro passes keyword arguments on to the model and guide; at β = 1 none is
        # passed, so a model without a beta argument still trains.
        options = {} if beta == 1.0 else {"beta": beta}
        features: list[torch.Tensor] = []

        def guide(_x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
            # q(z|x̃): the model scores the clean x, the guide reads the corrupted copy.
            # Only the guide's encoder calls are recorded (a VampPrior's are the model's).
            with self._recording() as outputs:
                z = self.vae.guide(x_in, **kwargs)
            features.extend(outputs)
            return z

        if self.free_bits:
            recorded = guide

            def guide(_x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
                with _LatentRecorder(self._latents):
                    return recorded(_x, **kwargs)

        plain = x_in is x and self.sparsity is None and not self.free_bits
        chosen = self.vae.guide if plain else guide
        loss = objective.differentiable_loss(self.vae.model, chosen, x, **options)
        return loss, features

    def _recording(self) -> AbstractContextManager[list[torch.Tensor]]:
        """Record the encoder's outputs where a sparsity penalty needs them."""
        if self.sparsity is None:
            return nullcontext([])
        return recorded_outputs(self.vae.encoder)

    def _direct_loss(
        self, x: torch.Tensor, beta: float, x_in: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        vae, objective = self.vae, self.objective
        particles = objective.num_particles
        with self._recording() as features:
            qz = vae.qz(x_in)  # batch (batch,), event (n_latent,)
        if self.free_bits:
            self._latents.append(qz)
        # The draws Pyro's guide site makes: rsample() or, under the vectorized
        # particle plate, rsample of the (particles, batch) expansion.
        z = qz.rsample() if particles == 1 else qz.rsample((particles,))
        log_px = vae.log_px(x, z)  # (batch,) or (particles, batch); observed values only
        pz = vae.prior().expand(qz.batch_shape)
        kl: torch.Tensor | None = None
        if type(objective) is TraceMeanField_ELBO:
            try:
                kl = kl_divergence(qz, pz).sum()
                kl = kl if particles == 1 else kl * particles
            except NotImplementedError:
                kl = None
        if kl is None:
            kl = (qz.log_prob(z) - pz.log_prob(z)).sum()
        loss = kl - log_px.sum() if beta == 1.0 else beta * kl - log_px.sum()
        return (loss if particles == 1 else loss / particles), features

    def _direct_matches_pyro(
        self, x: torch.Tensor, beta: float, x_in: torch.Tensor | None = None
    ) -> bool:
        """Compare the two estimators on ``x`` (the encoder reading ``x_in``, default ``x``)
        with the same random numbers.

        The RNG state is restored afterwards, so the check consumes no
        randomness and training stays reproducible.
        """
        if x.shape[0] == 0 or not self.vae.qz(x[:1]).has_rsample:
            return False
        x_in = x if x_in is None else x_in
        with torch.no_grad(), forked_rng(x.device) as rewind, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Encountered NaN")  # said below
            try:
                direct = self._direct_loss(x, beta, x_in)[0]
            except (RuntimeError, ValueError, NotImplementedError):
                return False  # a component the direct evaluation cannot broadcast
            rewind()
            reference = self._pyro_loss(x, beta, x_in)[0]
        check_finite_loss(reference, x, "the first batch")
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
                x = draw_binary_batch(x, step.vae.missing)
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
