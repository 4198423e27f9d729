"""Faster networks for training on a GPU: bf16 autocast and ``torch.compile``.

``pyrovae train --precision bf16`` runs the encoder and the decoder, and m2's
classifier (:func:`networks`, where nearly all of a step's arithmetic is) under
``torch.autocast(dtype=torch.bfloat16)`` during the training steps, and hands
their outputs on as float32: the densities, the KL, the flows and the ELBO
stay in float32, as do the weights, the gradients and the optimizer state
(mixed precision; bf16 has float32's exponent range, so no loss scaling is
needed). Evaluation (test and validation ELBO, ``evaluate``, ``diagnose``)
runs in float32 whatever the run trained with.

``pyrovae train --compile`` compiles the encoder's and the decoder's (and m2's classifier's)
``forward`` with ``torch.compile`` (inductor by default), and the parts a likelihood
asks for (``Likelihood.compiled_parts``: the autoregressive likelihood's hidden
units, 1.55x faster epochs on a CPU), in place: the
module tree, the parameter names and so the checkpoints are those of an
uncompiled run; ``sample``, ``evaluate`` and ``diagnose`` load it uncompiled,
and ``--resume`` compiles again unless given ``--no-compile``. The first
steps pay the compilation (tens of seconds on a CPU). Training undoes both
when it ends (:func:`release`), so the model it returns is a plain one.

Both are meant for GPUs (``benchmarks/gpu.sh`` is to measure them there; no
GPU has run it yet). On one CPU thread, MLP 784-400-50 at batch 256:
``torch.compile`` ran at about 0.85x the eager step (benchmarks/README.md,
"Rejected after measuring"), and bf16 at 1.07-1.14x float32 on a Xeon with
AVX512-BF16 (docs/training.md); on the digits' small network bf16 was slower.

Example
-------
>>> precision = MixedPrecision(vae, "bf16")  # hooks on vae.encoder and vae.decoder
>>> with precision.active():
...     loss = step.loss(x)  # the networks in bf16, the ELBO in float32
>>> compile_networks(vae)  # torch.compile of both forwards, in place
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

#: ``--precision``: the dtype the networks compute in during training steps.
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


#: The attributes that hold a model's networks: every model's encoder and decoder, and
#: M2's classifier q(y|x), a second encoder of the same size.
NETWORK_ATTRIBUTES = ("encoder", "decoder", "classifier")


def networks(vae: nn.Module) -> list[nn.Module]:
    """The networks of ``vae`` (those of :data:`NETWORK_ATTRIBUTES` it has)."""
    found = [getattr(vae, name, None) for name in NETWORK_ATTRIBUTES]
    return [module for module in found if isinstance(module, nn.Module)]


def _to_float(value: Any) -> Any:
    """``value`` with every low-precision floating tensor in it (tuples, lists, dicts
    included) cast to float32."""
    if isinstance(value, torch.Tensor):
        low = value.is_floating_point() and value.dtype in (torch.bfloat16, torch.float16)
        return value.float() if low else value
    if isinstance(value, (tuple, list)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, dict):
        return {key: _to_float(v) for key, v in value.items()}
    return value


class MixedPrecision:
    """Autocast of the networks of ``vae`` to ``precision`` while :meth:`active`.

    Forward hooks on :func:`networks` enter ``torch.autocast`` before each call
    and leave it after (on an exception too), casting the outputs back to
    float32; outside :meth:`active` the hooks do nothing. ``"fp32"`` registers
    no hooks.
    """

    def __init__(self, vae: nn.Module, precision: str) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        self.dtype = PRECISIONS[precision]
        self.precision = precision
        self._on = False
        self._entered: list[torch.autocast] = []
        self._handles: list[RemovableHandle] = []
        if self.dtype is None:
            return
        for module in networks(vae):
            self._handles.append(module.register_forward_pre_hook(self._enter))
            self._handles.append(module.register_forward_hook(self._leave, always_call=True))

    @contextmanager
    def active(self) -> Iterator[None]:
        """Within: the networks compute in the low precision (nested calls are fine)."""
        was, self._on = self._on, True
        try:
            yield
        finally:
            self._on = was

    def _enter(self, module: nn.Module, args: Any) -> None:
        if not self._on:
            return
        first = args[0] if args and isinstance(args[0], torch.Tensor) else next(module.parameters())
        device = first.device.type
        autocast = torch.autocast(device_type=device, dtype=self.dtype)
        autocast.__enter__()
        self._entered.append(autocast)

    def _leave(self, module: nn.Module, args: Any, output: Any) -> Any:
        if not self._on or not self._entered:
            return None
        self._entered.pop().__exit__(None, None, None)
        return _to_float(output)

    def remove(self) -> None:
        """Take the hooks off the networks."""
        for handle in self._handles:
            handle.remove()
        self._handles = []


def is_compile_error(error: BaseException) -> bool:
    """Whether ``error`` came from ``torch.compile``'s capture or its backend (no C++
    compiler, an unsupported operator), rather than from the model itself."""
    from torch._dynamo.exc import TorchDynamoException

    return isinstance(error, TorchDynamoException) or type(error).__module__.startswith(
        ("torch._inductor", "torch._dynamo")
    )


def release(vae: nn.Module, precision: MixedPrecision | None) -> None:
    """Undo :class:`MixedPrecision` and :func:`compile_networks` on ``vae``: its networks
    (and the likelihood's compiled parts) run their own ``forward`` in float32 again (a
    copy or pickle of it then works)."""
    if precision is not None:
        precision.remove()
    for module in compiled_modules(vae):
        module.__dict__.pop("forward", None)


def compiled_modules(vae: nn.Module) -> list[nn.Module]:
    """What ``--compile`` compiles: :func:`networks`, and the parts of the likelihood that
    ask for it (:meth:`~pyrovae.model.likelihoods.base.Likelihood.compiled_parts`)."""
    likelihood = getattr(vae, "likelihood", None)
    parts = likelihood.compiled_parts() if likelihood is not None else []
    return networks(vae) + list(parts)


def compile_networks(
    vae: nn.Module, backend: str = "inductor", mode: str | None = None
) -> list[nn.Module]:
    """Compile the ``forward`` of each of :func:`compiled_modules` (the networks, and the
    likelihood's parts that ask for it) with ``torch.compile``, in place (names and
    checkpoints unchanged); returns the modules compiled.

    ``mode`` is ``torch.compile``'s: ``"reduce-overhead"`` replays each network's
    kernels as a CUDA graph on a GPU (``benchmarks/train_throughput.py
    --compile-mode`` measures it); ``None`` is its default."""
    _quiet_cuda_home_notice()
    compiled = compiled_modules(vae)
    for module in compiled:
        # An instance attribute: nn.Module.__call__ runs it, hooks included, and
        # state_dict() keeps the module's own parameter names.
        module.forward = torch.compile(module.forward, backend=backend, mode=mode)  # type: ignore[method-assign]
    return compiled


def _drop_cuda_home_notice(record: logging.LogRecord) -> bool:
    """False for torch's notice that it found no CUDA runtime (and where it looked)."""
    return not str(record.msg).startswith("No CUDA runtime is found")


def _quiet_cuda_home_notice() -> None:
    """Leave out of the output the warning torch's C++-extension loader logs when the
    inductor compiles on a machine without CUDA ("No CUDA runtime is found, using
    CUDA_HOME=..."): on a CPU run it says nothing about the run. Other records pass."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    if _drop_cuda_home_notice not in logger.filters:
        logger.addFilter(_drop_cuda_home_notice)


def accelerate(
    vae: nn.Module, precision: str, compile: bool, compile_mode: str | None = None
) -> MixedPrecision | None:
    """``--precision`` and ``--compile`` on the networks of ``vae``: compiles them in
    place when ``compile`` (with ``torch.compile``'s ``compile_mode``); returns the
    low-precision hooks for the training step (``TrainStep.precision``), ``None``
    for ``"fp32"``."""
    hooks = None if precision == "fp32" else MixedPrecision(vae, precision)
    if compile:
        compile_networks(vae, mode=compile_mode)
    return hooks
