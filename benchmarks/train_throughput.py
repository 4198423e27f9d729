"""Training throughput: the step ``pyrovae train`` runs against a plain PyTorch VAE loop.

Both sides train the same networks (``pyrovae.model.networks``) on the same
Fashion-MNIST images (the training set as ``pyrovae train`` prepares it: a
uint8 tensor on the device, batches by index, dynamic binarization on the
device) with the same batch size, in one process:

- **pyrovae**: exactly what :func:`pyrovae.training.run.train` runs each epoch,
  :func:`pyrovae.training.step.train_epoch` over a :class:`pyrovae.training.step.TrainStep`
  built as the trainer builds it (the VAE's Pyro model and guide, the
  configured objective -- ``TraceMeanField_ELBO`` -- and its optimizer).
- **plain**: a VAE loop written the ordinary way: encoder, reparameterized
  sample, Bernoulli log-likelihood with logits, analytic KL,
  ``torch.optim.Adam`` with its defaults, dynamic binarization with
  ``torch.bernoulli``, a random permutation per epoch. With ``--guide iaf`` both sides use pyrovae's
  default IAF guide (4 affine autoregressive layers, MADEs of 128 hidden
  units conditioned on h(x), coordinates reversed between layers): pyrovae's
  as ``pyrovae train --guide iaf`` builds it, the plain loop's written out
  (:class:`PlainIAFVAE`, the same MADE modules, the one-sample KL).

Each repetition times both sides for the same number of images, alternating
which goes first; the result is the median over repetitions of the ratio
pyrovae / plain images/s, with its spread (min, max). Images/s come from
wall-clock time; the ratio of per-process CPU time is printed as well, since
on a shared machine it is less disturbed by other processes. Peak memory is
the peak RSS of a child process while it runs only that loop, after loading
the data (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``; the
resident data set counts), or ``torch.cuda.max_memory_allocated`` (CUDA).

``--precision bf16`` and ``--compile`` (``--compile-mode reduce-overhead``: CUDA
graphs) speed up both sides alike, each as its author would: pyrovae's step with
``pyrovae train --precision bf16`` / ``--compile``
(:mod:`pyrovae.training.acceleration`: the encoder and decoder under bf16
autocast, their ``forward`` compiled), the plain loop with its forward under
``torch.autocast(dtype=torch.bfloat16)`` and the whole model compiled with
``torch.compile``. They are for GPUs (``benchmarks/gpu.sh``).

Run from the repository root::

    python benchmarks/train_throughput.py                  # all cases, CPU (+ CUDA if present)
    python benchmarks/train_throughput.py --quick          # MLP, batch 256, 3 repetitions
    python benchmarks/train_throughput.py --arch mlp --batch-size 256 --reps 9 --json out.json
    python benchmarks/train_throughput.py --arch mlp --batch-size 256 --guide iaf --reps 7
    python benchmarks/train_throughput.py --kernels --arch mlp --batch-size 256 --guide normal iaf

``--kernels`` counts the tensor operations of one step on each side instead of
timing them (views and allocations, which run no kernel, and the optimizer's
update left out):
a GPU runs the step of these small networks about as fast as it launches
kernels, so the ratio of the counts is what a CPU can tell of the GPU ratio.
"""

from __future__ import annotations

import argparse
import itertools
import json
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

import pyro
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from pyrovae.config import DataConfig, RunConfig, TrainConfig
from pyrovae.data.pixels import draw_binary, to_unit_float
from pyrovae.data.prepare import prepare_data
from pyrovae.inference.objectives import make_objective
from pyrovae.model.context import ModelContext
from pyrovae.model.flows import conditional_made
from pyrovae.model.networks import NETWORKS
from pyrovae.model.spec import component_class, model_config
from pyrovae.model.vae import VAE
from pyrovae.runtime import synchronize
from pyrovae.training.acceleration import accelerate
from pyrovae.training.schedules import kl_weight
from pyrovae.training.step import TrainStep, make_optimizer, train_epoch

LATENT_DIM = 50
HIDDEN = (400,)
#: ``--guide iaf``: pyrovae's defaults (4 layers of 128 hidden units, context h(x)).
IAF_LAYERS, IAF_HIDDEN = 4, (128,)
#: ``--precision`` and ``--compile``, for both sides.
SPEED: dict[str, Any] = {"precision": "fp32", "compile": False, "compile_mode": None}
#: Where Fashion-MNIST is read from (``--data-dir``; None: pyrovae's default places).
DATA: dict[str, str | None] = {"data_dir": None}


class PlainVAE(nn.Module):
    """The same encoder, decoder and Gaussian head, with the loss written out by hand."""

    def __init__(self, arch: str, image_shape: tuple[int, int, int]) -> None:
        super().__init__()
        network = NETWORKS.get(arch)(hidden=HIDDEN)
        self.encoder, self.decoder = network.build(ModelContext(image_shape, LATENT_DIM))
        self.loc = nn.Linear(self.encoder.out_features, LATENT_DIM)
        self.raw_scale = nn.Linear(self.encoder.out_features, LATENT_DIM)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative ELBO of the batch."""
        h = self.encoder(x)
        loc = self.loc(h)
        scale = F.softplus(self.raw_scale(h)) + 1e-4
        z = loc + scale * torch.randn_like(loc)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (loc.pow(2) + scale.pow(2) - 1.0).sum(1) - scale.log().sum(1)
        return (recon + kl).mean()


class PlainIAFVAE(PlainVAE):
    """:class:`PlainVAE` with pyrovae's default IAF guide written out by hand: the
    Gaussian followed by :data:`IAF_LAYERS` affine autoregressive layers, each a
    MADE (the same ``pyro.nn.ConditionalAutoRegressiveNN`` module pyrovae builds)
    reading z and the encoder's features h(x), coordinates reversed between
    layers; the one-sample ``log q(z_K|x) - log p(z_K)`` in place of the analytic KL."""

    def __init__(self, arch: str, image_shape: tuple[int, int, int]) -> None:
        super().__init__(arch, image_shape)
        self.made = nn.ModuleList(
            conditional_made(LATENT_DIM, self.encoder.out_features, IAF_HIDDEN)
            for _ in range(IAF_LAYERS)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Mean negative ELBO of the batch."""
        h = self.encoder(x)
        loc = self.loc(h)
        scale = F.softplus(self.raw_scale(h)) + 1e-4
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        log_q = -0.5 * eps.pow(2).sum(1) - scale.log().sum(1)  # the 2 pi terms cancel
        for i, made in enumerate(self.made):
            if i > 0:
                z = z.flip(-1)
            shift, log_scale = made(z, context=h)
            log_scale = log_scale.clamp(-5.0, 3.0)  # Pyro's AffineAutoregressive clip
            z = shift + log_scale.exp() * z
            log_q = log_q - log_scale.sum(1)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
        return (recon + log_q + 0.5 * z.pow(2).sum(1)).mean()


#: The plain model of each ``--guide``.
PLAIN_MODELS = {"normal": PlainVAE, "iaf": PlainIAFVAE}


def _config(arch: str, batch_size: int, device: str, guide: str = "normal") -> RunConfig:
    flow = {"flows": IAF_LAYERS, "flow_hidden": IAF_HIDDEN} if guide == "iaf" else {}
    return RunConfig(
        data=DataConfig(dataset="fashion-mnist", data_dir=DATA["data_dir"]),
        model=model_config(network=arch, hidden=HIDDEN, latent_dim=LATENT_DIM, guide=guide, **flow),
        train=TrainConfig(batch_size=batch_size, device=device),  # type: ignore[arg-type]
    )


class PyrovaeSide:
    """What :func:`pyrovae.training.run.train` builds, and the function it calls each epoch."""

    def __init__(self, config: RunConfig, images: torch.Tensor) -> None:
        self.config, self.images = config, images
        self.vae = VAE(config.model).to(images.device)
        optimizer = make_optimizer(self.vae.parameters(), lr=config.train.lr)
        self.step = TrainStep(self.vae, make_objective(config.train), optimizer)
        self.step.precision = accelerate(
            self.vae, SPEED["precision"], SPEED["compile"], SPEED["compile_mode"]
        )
        self.epoch_steps = -(-images.shape[0] // config.train.batch_size)

    def run(self, steps: int) -> torch.Tensor:
        order = torch.randperm(self.images.shape[0], device=self.images.device)
        return train_epoch(
            self.step,
            self.images,
            order,
            self.config.train.batch_size,
            binarize=True,
            beta=lambda i: kl_weight(self.config, i, self.epoch_steps),
            steps=range(steps),
        )


class PlainSide:
    """A plain PyTorch training loop."""

    def __init__(self, config: RunConfig, images: torch.Tensor) -> None:
        self.images, self.batch_size = images, config.train.batch_size
        plain_model = PLAIN_MODELS[config.model.guide]
        self.model = plain_model(config.model.network, tuple(images.shape[1:])).to(images.device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.train.lr)
        mode = SPEED["compile_mode"]
        self.forward = torch.compile(self.model, mode=mode) if SPEED["compile"] else self.model
        self.autocast = torch.autocast(
            images.device.type, dtype=torch.bfloat16, enabled=SPEED["precision"] == "bf16"
        )

    def run(self, steps: int) -> torch.Tensor:
        order = torch.randperm(self.images.shape[0], device=self.images.device)
        total = torch.zeros((), device=self.images.device)
        for i in range(steps):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            x = torch.bernoulli(self.images[index].float() / 255)
            with self.autocast:
                loss = self.forward(x)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            total += loss.detach()
        return total


SIDES = {"pyrovae": PyrovaeSide, "plain": PlainSide}


class AblationSide(PyrovaeSide):
    """The step with some of its four measures turned off, to measure each."""

    def __init__(
        self,
        config: RunConfig,
        images: torch.Tensor,
        *,
        direct: bool,
        fused: bool,
        validate: bool,
        uniform: bool,
    ) -> None:
        super().__init__(config, images)
        optimizer = (
            make_optimizer(self.vae.parameters(), config.train.lr)
            if fused
            else torch.optim.Adam(self.vae.parameters(), lr=config.train.lr)
        )
        precision = self.step.precision  # --precision's hooks, already on the networks
        self.step = TrainStep(self.vae, make_objective(config.train), optimizer, fast=direct)
        self.step.precision = precision
        self.validate, self.uniform = validate, uniform

    def run(self, steps: int) -> torch.Tensor:
        if self.uniform and not self.validate:
            return super().run(steps)
        # train_epoch's loop, with Pyro's validation left on or torch.bernoulli's draws.
        order = torch.randperm(self.images.shape[0], device=self.images.device)
        batch_size, total = self.config.train.batch_size, torch.zeros((), device=self.images.device)
        with pyro.validation_enabled(self.validate):
            for i in range(steps):
                x = to_unit_float(self.images[order[i * batch_size : (i + 1) * batch_size]])
                total += self.step(draw_binary(x) if self.uniform else torch.bernoulli(x))
        return total


#: name -> (direct ELBO, fused Adam, validation on, uniform binarization), from Pyro's
#: plain step to pyrovae's.
ABLATIONS = {
    "Pyro differentiable_loss, validation on, Adam": (False, False, True, False),
    "+ validation off in the loop": (False, False, False, False),
    "+ fused Adam": (False, True, False, False),
    "+ direct ELBO": (True, True, False, False),
    "+ binarization by a uniform draw (= pyrovae train)": (True, True, False, True),
}


def run_ablation(
    arch: str,
    batch_size: int,
    device: torch.device,
    images_per_rep: int,
    reps: int,
    guide: str = "normal",
) -> dict[str, tuple[float, float, float]]:
    """Median (min, max) images/s ratio to the plain loop of each step variant."""
    config = _config(arch, batch_size, device.type, guide)
    data = prepare_data(config, device, binary=component_class(config.model, "likelihood").binary)
    config.model.data_shape = data.data_shape
    steps = max(1, min(images_per_rep // batch_size, data.train.shape[0] // batch_size))
    torch.manual_seed(0)
    sides: dict[str, Any] = {"plain": PlainSide(config, data.train)}
    for name, (direct, fused, validate, uniform) in ABLATIONS.items():
        sides[name] = AblationSide(
            config, data.train, direct=direct, fused=fused, validate=validate, uniform=uniform
        )
    for side in sides.values():
        _timed(side, min(steps, 5), device)
    wall: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        shift = rep % len(names)  # rotate which variant goes first
        for name in names[shift:] + names[:shift]:
            wall[name].append(_timed(sides[name], steps, device)[0])
    out = {}
    for name in ABLATIONS:
        ratios = [p / v for v, p in zip(wall[name], wall["plain"], strict=True)]
        out[name] = (statistics.median(ratios), min(ratios), max(ratios))
    return out


#: Operations that run no kernel (views, which describe a tensor anew, and allocations
#: left uninitialized): left out of the count.
NO_KERNEL_OPERATIONS = frozenset(
    "t detach view expand unsqueeze squeeze slice select unbind permute transpose as_strided "
    "alias _unsafe_view _reshape_alias reshape flatten unflatten split chunk narrow diagonal "
    "empty empty_like new_empty empty_strided _record_function_enter_new "
    "_record_function_exit".split()
)


class _OperationCount(TorchDispatchMode):
    """Counts the tensor operations dispatched while it is active and not paused."""

    def __init__(self) -> None:
        super().__init__()
        self.count, self.paused = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if not self.paused and func.overloadpacket.__name__ not in NO_KERNEL_OPERATIONS:
            self.count += 1
        return func(*args, **(kwargs or {}))


def operations_per_step(side: Any, steps: int = 4) -> float:
    """Tensor operations (kernels, on a GPU) per training step of ``side``, the
    optimizer's update left out (fused Adam in pyrovae, torch's default Adam in the
    plain loop, which on a CPU updates one tensor at a time). A GPU runs the step of
    an MLP VAE at batch 256 about as fast as its host dispatches operations, so this
    is what a CPU can tell of the GPU ratio. An operation is counted where Python
    calls it: one whose kernel calls others (``binary_cross_entropy_with_logits``
    runs a log-sigmoid, a multiply and a subtraction) counts once."""
    optimizer = side.step.optimizer if isinstance(side, PyrovaeSide) else side.optimizer
    update = optimizer.step
    counter = _OperationCount()

    def paused_update(*args: Any, **kwargs: Any) -> Any:
        counter.paused = True
        try:
            return update(*args, **kwargs)
        finally:
            counter.paused = False

    side.run(2)  # past the first step's checks
    optimizer.step = paused_update
    try:
        with counter:
            side.run(steps)
    finally:
        del optimizer.step  # the class's update again
    return counter.count / steps


KERNELS_HEADER = (
    "| device | arch | guide | batch | pyrovae ops/step | plain ops/step | plain / pyrovae |\n"
    "|---|---|---|---|---|---|---|"
)


def run_kernels(arch: str, batch_size: int, device: torch.device, guide: str) -> str:
    """A table row: tensor operations per step of both sides and their ratio."""
    config = _config(arch, batch_size, device.type, guide)
    data = prepare_data(config, device, binary=component_class(config.model, "likelihood").binary)
    config.model.data_shape = data.data_shape
    torch.manual_seed(0)
    counts = {name: operations_per_step(cls(config, data.train)) for name, cls in SIDES.items()}
    return (
        f"| {device} | {arch} | {guide} | {batch_size} | {counts['pyrovae']:.0f} "
        f"| {counts['plain']:.0f} | **{counts['plain'] / counts['pyrovae']:.2f}** |"
    )


@dataclass
class CaseResult:
    device: str
    arch: str
    guide: str
    batch_size: int
    steps: int
    reps: int
    direct_step: bool | None
    pyrovae_images_per_s: float
    plain_images_per_s: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    cpu_time_ratio_median: float
    pyrovae_peak_mb: float | None
    plain_peak_mb: float | None
    #: Peak minus the resident memory before the loop (CPU: libraries and data set excluded).
    pyrovae_loop_mb: float | None
    plain_loop_mb: float | None


def _timed(side: Any, steps: int, device: torch.device) -> tuple[float, float]:
    """Wall-clock and process CPU seconds of ``steps`` steps (the loss read once at the end)."""
    synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    side.run(steps).item()
    synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _peak_memory_mb(
    side: str, arch: str, batch_size: int, device: str, steps: int, guide: str
) -> tuple[float, float]:
    """Peak memory of ``side``'s loop: a child process's peak RSS on CPU, max allocated on CUDA."""
    command = [sys.executable, __file__, "--threads", str(torch.get_num_threads()),
               "--precision", SPEED["precision"], *(["--compile"] if SPEED["compile"] else []),
               *(["--compile-mode", SPEED["compile_mode"]] if SPEED["compile_mode"] else []),
               *(["--data-dir", DATA["data_dir"]] if DATA["data_dir"] else []),
               "--_memory-child", side, arch, str(batch_size), device, str(steps),
               guide]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    peak, baseline = map(float, done.stdout.strip().splitlines()[-1].split())
    return peak, peak - baseline


def _memory_child(
    side_name: str, arch: str, batch_size: int, device_name: str, steps: int, guide: str
) -> None:
    device = torch.device(device_name)
    config = _config(arch, batch_size, device_name, guide)
    data = prepare_data(config, device, binary=component_class(config.model, "likelihood").binary)
    config.model.data_shape = data.data_shape
    side = SIDES[side_name](config, data.train)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        # Reset the peak RSS (VmHWM) so that loading the data does not count.
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        with open("/proc/self/status") as handle:
            baseline_kib = next(
                int(line.split()[1]) for line in handle if line.startswith("VmRSS:")
            )
    side.run(steps).item()
    if device.type == "cuda":
        print(torch.cuda.max_memory_allocated(device) / 2**20, 0.0)
        return
    with open("/proc/self/status") as handle:
        peak_kib = next(int(line.split()[1]) for line in handle if line.startswith("VmHWM:"))
    print(peak_kib / 1024, baseline_kib / 1024)


def run_case(
    arch: str,
    batch_size: int,
    device: torch.device,
    images_per_rep: int,
    reps: int,
    memory: bool,
    guide: str = "normal",
) -> CaseResult:
    config = _config(arch, batch_size, device.type, guide)
    data = prepare_data(config, device, binary=component_class(config.model, "likelihood").binary)
    config.model.data_shape = data.data_shape
    steps = max(1, min(images_per_rep // batch_size, data.train.shape[0] // batch_size))
    torch.manual_seed(0)
    sides = {name: cls(config, data.train) for name, cls in SIDES.items()}
    for side in sides.values():  # warm-up: allocator, kernels, the step's first-batch check
        _timed(side, min(steps, 5), device)
    wall: dict[str, list[float]] = {name: [] for name in sides}
    cpu: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for rep in range(reps):
        for name in names if rep % 2 == 0 else names[::-1]:
            seconds, cpu_seconds = _timed(sides[name], steps, device)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    images = steps * batch_size
    ratios = [plain / pyro for pyro, plain in zip(wall["pyrovae"], wall["plain"], strict=True)]
    cpu_ratios = [plain / pyro for pyro, plain in zip(cpu["pyrovae"], cpu["plain"], strict=True)]
    peaks: dict[str, tuple[float, float] | tuple[None, None]] = {
        name: (None, None) for name in sides
    }
    if memory:
        for name in names:
            peaks[name] = _peak_memory_mb(
                name, arch, batch_size, device.type, min(steps, 20), guide
            )
    return CaseResult(
        device=str(device),
        arch=arch,
        guide=guide,
        batch_size=batch_size,
        steps=steps,
        reps=reps,
        direct_step=sides["pyrovae"].step.direct,
        pyrovae_images_per_s=images / statistics.median(wall["pyrovae"]),
        plain_images_per_s=images / statistics.median(wall["plain"]),
        ratio_median=statistics.median(ratios),
        ratio_min=min(ratios),
        ratio_max=max(ratios),
        cpu_time_ratio_median=statistics.median(cpu_ratios),
        pyrovae_peak_mb=peaks["pyrovae"][0],
        plain_peak_mb=peaks["plain"][0],
        pyrovae_loop_mb=peaks["pyrovae"][1],
        plain_loop_mb=peaks["plain"][1],
    )


def _row(r: CaseResult) -> str:
    def mb(value: float | None) -> str:
        return "-" if value is None else f"{value:.0f}"

    return (
        f"| {r.device} | {r.arch} | {r.guide} | {r.batch_size} | {r.pyrovae_images_per_s:,.0f} "
        f"| {r.plain_images_per_s:,.0f} | **{r.ratio_median:.2f}** "
        f"({r.ratio_min:.2f}-{r.ratio_max:.2f}) | {r.cpu_time_ratio_median:.2f} "
        f"| {mb(r.pyrovae_peak_mb)} / {mb(r.plain_peak_mb)} "
        f"| {mb(r.pyrovae_loop_mb)} / {mb(r.plain_loop_mb)} |"
    )


HEADER = (
    "| device | arch | guide | batch | pyrovae img/s | plain img/s | ratio median (min-max) "
    "| CPU-time ratio | peak MB pyrovae / plain | of which the loop |\n"
    "|---|---|---|---|---|---|---|---|---|---|"
)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", nargs="+", default=["mlp", "conv"], choices=["mlp", "conv"])
    parser.add_argument("--batch-size", nargs="+", type=int, default=[128, 256, 1024])
    parser.add_argument(
        "--guide",
        nargs="+",
        default=["normal"],
        choices=list(PLAIN_MODELS),
        help="q(z|x): mean-field, or pyrovae's default IAF against one written by hand",
    )
    parser.add_argument(
        "--device",
        nargs="+",
        default=None,
        help="cpu and/or cuda [default: cpu, and cuda if present]",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="folder of the Fashion-MNIST IDX files [default: "
        "pyrovae's: /usr/share/datasets/fashion-mnist, then its cache]",
    )
    parser.add_argument("--images", type=int, default=10240, help="images per side per repetition")
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions (alternating)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory runs")
    parser.add_argument("--quick", action="store_true", help="MLP, batch 256, 3 repetitions")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--precision", choices=["fp32", "bf16"], default="fp32", help="both sides' networks"
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile on both sides")
    parser.add_argument(
        "--compile-mode",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        help="torch.compile's mode (reduce-overhead: CUDA graphs on a GPU); implies --compile",
    )
    parser.add_argument(
        "--ablation", action="store_true", help="measure each of the step's measures instead"
    )
    parser.add_argument(
        "--kernels",
        action="store_true",
        help="count the tensor operations of a step (kernels on a GPU) instead of timing",
    )
    parser.add_argument("--_memory-child", nargs=6, default=None, help=argparse.SUPPRESS)
    return parser


def _print_ablation(args: argparse.Namespace, devices: list[str]) -> None:
    for device, arch, guide, batch_size in itertools.product(
        devices, args.arch, args.guide, args.batch_size
    ):
        print(f"\n{device}, {arch}, {guide} guide, batch {batch_size}: "
              "images/s ratio to plain PyTorch")  # fmt: skip
        result = run_ablation(arch, batch_size, torch.device(device), args.images, args.reps, guide)
        for name, (median, low, high) in result.items():
            print(f"| {name} | **{median:.2f}** ({low:.2f}-{high:.2f}) |", flush=True)


def _print_kernels(args: argparse.Namespace, devices: list[str]) -> None:
    print(KERNELS_HEADER)
    cases = itertools.product(devices, args.arch, args.guide, args.batch_size)
    for device, arch, guide, batch_size in cases:
        print(run_kernels(arch, batch_size, torch.device(device), guide), flush=True)


def _print_cases(args: argparse.Namespace, devices: list[str]) -> None:
    print(HEADER, flush=True)
    results = []
    cases = itertools.product(devices, args.arch, args.guide, args.batch_size)
    for device, arch, guide, batch_size in cases:
        memory = not args.no_memory
        result = run_case(
            arch, batch_size, torch.device(device), args.images, args.reps, memory, guide
        )
        results.append(result)
        print(_row(result), flush=True)
    if args.compile_mode == "reduce-overhead" and "cuda" in devices:
        from torch._dynamo.utils import counters

        # Inductor falls back to plain kernels where it cannot capture a graph, and says so
        # only in a log that is off by default: without this the rows could be eager ones.
        skips = counters["inductor"].get("cudagraph_skips", 0)
        print(f"CUDA graphs: {skips} compiled function(s) skipped them (0: all ran as graphs)")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump([asdict(r) for r in results], handle, indent=2)


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.compile = args.compile or args.compile_mode is not None
    SPEED.update(precision=args.precision, compile=args.compile, compile_mode=args.compile_mode)
    DATA["data_dir"] = args.data_dir
    if args.threads:
        torch.set_num_threads(args.threads)
    if args._memory_child:
        side, arch, batch, device, steps, guide = args._memory_child
        _memory_child(side, arch, int(batch), device, int(steps), guide)
        return
    if args.quick:
        args.arch, args.batch_size, args.reps = ["mlp"], [256], 3
    devices = args.device or ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, pyro {pyro.__version__}, "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"precision {args.precision}{', compiled' if args.compile else ''}"
        + (f" ({args.compile_mode})" if args.compile_mode else "")
        + (f", {torch.cuda.get_device_name(0)}" if "cuda" in devices else "")
    )
    if args.ablation:
        _print_ablation(args, devices)
    elif args.kernels:
        _print_kernels(args, devices)
    else:
        _print_cases(args, devices)


if __name__ == "__main__":
    main()
