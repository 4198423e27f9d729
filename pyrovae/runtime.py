"""Where and how computations run: devices, threads, eval mode, RNG isolation, progress.

The one definition of each: :func:`resolve_device` (``auto``/``cpu``/``cuda``),
:func:`module_device`, :func:`set_threads` (the command line's ``--threads``)
and :func:`threads` (a thread count for a block, then the caller's again),
:func:`eval_mode` (a module in eval mode for a block), :func:`frozen`
(parameters without gradients for a block), :func:`forked_rng` (draws that
leave the caller's random streams as they were, and the same random numbers
twice), :func:`isolated_rng` (a seeded block that leaves the caller's streams
alone) and :func:`progress_bar`.

Threads
-------
torch runs each operator on ``torch.get_num_threads()`` threads, by default
one per physical core. ``torchrun`` (and so ``pyrovae train --devices N``)
sets ``OMP_NUM_THREADS=1`` when it is unset, so each of its processes uses
one. On a machine shared with other work the default oversubscribes the
cores: on this project's 2-core machine under load (load average 5-8), the
default digits run trained at 225-455 images/s with torch's default of 2
threads and at 2,000-13,000 images/s with ``--threads 1`` (the img/s of the
epoch lines of ``pyrovae train --no-progress``, with and without ``--threads
1``, issue 9's reliability pass). ``--threads``
sets the count (and the inter-op pool's, where torch still allows it).

``pyrovae train --threads N`` records N in the run's config.json, and a
resumed run (one process) runs on it again, through :func:`threads`: the
intra-op count only, as the inter-op pool can be set once per process.
Whether the count changes the last bits of a
CPU run depends on the kernels: torch's matrix products split the output,
not the sum, across threads, but its parallel reductions add in per-thread
chunks. On that machine one epoch on digits gave bit-identical parameters
with 1 and 2 threads (hidden 400, batch 128; hidden 2048, batch 1024);
torch does not promise it.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from pyrovae.errors import ConfigError, check_count

T = TypeVar("T")
M = TypeVar("M", bound=nn.Module)


def resolve_device(name: str) -> torch.device:
    """``auto`` takes CUDA when present; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for, but torch sees no CUDA device")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def module_device(module: nn.Module) -> torch.device:
    """The device of ``module``'s first parameter."""
    return next(module.parameters()).device


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says an allocation failed (host memory or a GPU's)."""
    text = str(err).lower()
    return isinstance(err, MemoryError | torch.OutOfMemoryError) or (
        "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text
    )


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a GPU's kernels run after the call that
    launched them returns), so that a clock read after this counts it; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def set_threads(n: int | None) -> None:
    """Run torch's operators on ``n`` threads (``None``: leave torch's choice)."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--threads must be a whole number >= 1, got {n!r}")
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only allowed before the first inter-op parallel work
        pass


@contextmanager
def threads(n: int | None) -> Iterator[None]:
    """torch's operators on ``n`` intra-op threads for the block (``None``: unchanged),
    then on the caller's count again.

    For library code that knows better for one computation (NUTS differentiates a
    few codes thousands of times, where thread start-up costs more than it saves);
    only the command line's ``--threads`` (:func:`set_threads`) sets the count for good.
    """
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def describe_threads() -> str:
    """``"2 threads"``: how many threads torch's operators run on in this process."""
    n = torch.get_num_threads()
    return f"{n} thread" if n == 1 else f"{n} threads"


@contextmanager
def eval_mode(module: M) -> Iterator[M]:
    """``module`` in eval mode for the block, then back in the mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


@contextmanager
def frozen(module: M) -> Iterator[M]:
    """``module`` in eval mode and without gradients for its parameters, for the block."""
    flags = [p.requires_grad for p in module.parameters()]
    with eval_mode(module):
        for p in module.parameters():
            p.requires_grad_(False)
        try:
            yield module
        finally:
            for p, flag in zip(module.parameters(), flags, strict=True):
                p.requires_grad_(flag)


@contextmanager
def forked_rng(device: torch.device | str = "cpu") -> Iterator[Callable[[], None]]:
    """Run the block on the caller's random streams, then put them back as they were.

    The streams are torch's CPU generator (every visible GPU's too when
    ``device`` is a CUDA device or a ``--device`` name that resolves to one),
    NumPy's global generator and Python's :mod:`random` (ArviZ's
    ``random_seed`` reseeds NumPy's). The block receives ``rewind``, which
    puts the streams back to where the block started: code that must draw
    the same random numbers twice (the training step's check of its direct
    ELBO against Pyro's) calls it between the two.

    Example
    -------
    >>> with forked_rng(x.device) as rewind:
    ...     first = torch.rand(3)
    ...     rewind()
    ...     assert torch.equal(first, torch.rand(3))
    """
    if isinstance(device, str):
        device = resolve_device(device)
    # Only a CUDA device's streams: a CPU computation must not start CUDA.
    gpus = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    cpu_state = torch.get_rng_state()
    gpu_states = [torch.cuda.get_rng_state(gpu) for gpu in gpus]
    numpy_state = np.random.get_state()
    python_state = random.getstate()

    def rewind() -> None:
        torch.set_rng_state(cpu_state)
        for gpu, state in zip(gpus, gpu_states, strict=True):
            torch.cuda.set_rng_state(state, gpu)
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    try:
        yield rewind
    finally:
        rewind()


@contextmanager
def isolated_rng(device: torch.device | str, seed: int | None) -> Iterator[None]:
    """Run the block on random streams seeded with ``seed``, then put the caller's back
    as they were (:func:`forked_rng`), so that a seeded operation leaves its
    caller's draws alone.

    With ``seed=None`` the block draws from the caller's streams as any code
    does (nothing is forked). ``device`` is a device or a ``--device`` name; a
    CUDA device's streams are seeded and restored too (every visible GPU's).
    """
    if seed is None:
        yield
        return
    seed = check_count(seed, "the seed", 0, 2**32 - 1)  # numpy's range (config.MAX_SEED)
    with forked_rng(device):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        yield


def progress_bar(
    iterable: Iterable[T], desc: str, enabled: bool, total: int | None = None, unit: str = "it"
) -> Iterable[T]:
    """``iterable`` with a tqdm bar on stderr when ``enabled`` and stderr is a terminal."""
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(
        iterable, desc=desc, total=total, unit=unit, leave=False, file=sys.stderr, disable=None
    )
