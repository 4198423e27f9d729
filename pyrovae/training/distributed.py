"""Data-parallel training with :mod:`torch.distributed`.

``torchrun --nproc-per-node N -m pyrovae train ...`` starts N processes with
``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT``
set; :func:`session` joins them into one process group (NCCL on GPUs, gloo on
CPU). Every process builds the same model from the same seed and draws the
same permutation of the training set each epoch; each global batch is split
into ``WORLD_SIZE`` contiguous shards, one per process, and after ``backward``
the gradients are summed over processes with one all-reduce of a flat buffer
(each process's loss is its shard's sum divided by the *global* batch size, so
the sum is the gradient of the global batch's mean loss: the update a single
process would make on the whole batch). Only rank 0 writes the run directory.

The random draws (dynamic binarization, z ~ q(z|x)) differ per process: rank
0 keeps the single-process stream, rank r > 0 is reseeded from (seed, r).
Every rank's RNG state goes into the checkpoint, so a run resumed with the
same number of processes continues exactly (on CPU).

``pyrovae train --devices N`` is a shortcut for ``torchrun --standalone
--nproc-per-node N -m pyrovae train ...`` on one machine (:func:`launch`).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import torch
import torch.distributed as dist
from torch import nn

from pyrovae.errors import ConfigError, PyrovaeError

T = TypeVar("T")


@dataclass(frozen=True)
class Context:
    """Where this process stands in the data-parallel job (rank 0 of 1 when alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """This process's device: for CUDA, the GPU of its local rank."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def broadcast(self, obj: T) -> T:
        """Rank 0's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def on_main(self, work: Callable[[], T]) -> T:
        """``work()`` run by rank 0 alone; its result on every process.

        A :class:`~pyrovae.errors.PyrovaeError` it raises is raised by every
        process, so that none is left waiting for rank 0 (e.g. for the run
        directory it could not lock).
        """
        if not self.enabled:
            return work()
        outcome: tuple[Any, PyrovaeError | None] = (None, None)
        if self.is_main:
            try:
                outcome = (work(), None)
            except PyrovaeError as err:
                outcome = (None, err)
        result, error = self.broadcast(outcome)
        if error is not None:
            raise error
        return cast(T, result)

    def all_gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over processes (a new tensor)."""
        tensor = tensor.clone()
        if self.enabled:
            dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast_parameters(self, module: nn.Module) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor, src=0)

    def all_reduce_gradients(self, parameters: Sequence[nn.Parameter]) -> None:
        """Sum the gradients over processes, in one all-reduce of a flat buffer."""
        if not self.enabled or not parameters:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in parameters]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        offset = 0
        for p, g in zip(parameters, grads, strict=True):
            n = g.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n


def rank_seed(seed: int, rank: int) -> int:
    """The torch seed of process ``rank`` once the model is built (distinct per rank)."""
    return seed if rank == 0 else (seed * 1_000_003 + rank) % (2**63)


def env_world_size() -> int:
    """``WORLD_SIZE`` as set by torchrun (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_rank() -> int:
    """``RANK`` as set by torchrun (0 when not launched by it)."""
    return int(os.environ.get("RANK", "0"))


@contextmanager
def session(device: torch.device) -> Iterator[Context]:
    """Join the process group that torchrun set up, for the length of the block.

    Outside torchrun (no ``WORLD_SIZE`` > 1) this is a single-process context.
    A group initialized by the caller is used as is and left open.
    """
    world_size = env_world_size()
    if world_size <= 1 and not dist.is_initialized():
        yield Context()
        return
    owned = not dist.is_initialized()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if owned:
        _import_group_capturing_modules()
        if device.type == "cuda":
            # Every process of this machine says so, before any waits for a peer.
            local_world_size = int(os.environ.get("LOCAL_WORLD_SIZE", local_rank + 1))
            n_gpus = torch.cuda.device_count()
            if local_world_size > n_gpus:
                raise ConfigError(
                    f"{local_world_size} processes on this machine need one GPU each, but "
                    f"torch sees {n_gpus}: start at most {n_gpus}, or train with --device cpu"
                )
            torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl")
        else:
            dist.init_process_group("gloo")
    context = Context(dist.get_rank(), dist.get_world_size(), local_rank)
    try:
        yield context
    finally:
        if owned:
            dist.destroy_process_group()


def _import_group_capturing_modules() -> None:
    """Import, before the process group exists, the torch modules whose functions
    take ``group=group.WORLD`` as a default argument.

    Python evaluates a default once, at import. Imported after
    ``init_process_group`` (``torch.optim.Adam(fused=True)`` imports
    ``torch._dynamo``, which imports ``torch.distributed.nn.functional``), those
    defaults hold the live group, so ``destroy_process_group`` cannot free it:
    its gloo worker and TCP threads outlived the session and were torn down
    only during interpreter shutdown, while the peer processes exited and
    closed their sockets. That unordered teardown is the one left at exit when
    ``pyrovae train --devices 2 --device cpu`` aborted ("terminate called
    without an active exception") after a finished run. Imported first, the
    defaults are ``None`` (the current group, looked up at call time) and the
    group with its threads is gone when the session ends.
    """
    import torch.distributed.nn.functional  # noqa: F401


#: torchrun's ``main``, minus the tracebacks it prints when a process fails or
#: Ctrl-C stops the job: the processes have printed their own one-line error.
_TORCHRUN = """\
import sys
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import main
try:
    main(sys.argv[1:])
except ChildFailedError:
    sys.exit(1)
except SignalException as err:
    sys.exit(128 + int(err.sigval))
"""


def torchrun_command(nproc: int, args: Sequence[str]) -> list[str]:
    """``torchrun --standalone --nproc-per-node nproc -m pyrovae ARGS`` as an argument list."""
    return [sys.executable, "-c", _TORCHRUN, "--standalone",
            f"--nproc-per-node={nproc}", "-m", "pyrovae", *args]  # fmt: skip


def launch(nproc: int, args: Sequence[str], threads: int | None = None) -> int:
    """Run ``pyrovae ARGS`` as ``nproc`` data-parallel processes on this machine.

    Each process runs its operators on ``threads`` CPU threads (default: the
    environment's ``OMP_NUM_THREADS``, else 1, which torchrun would choose too,
    with a warning). Returns torchrun's exit status (non-zero when any process
    failed).
    """
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", "1")
    process = subprocess.Popen(torchrun_command(nproc, args), env=env)
    # SIGTERM from kill or timeout reaches this process alone (Ctrl-C reaches the
    # whole group): pass it on, or torchrun and its processes would train on, orphaned.
    forwarding = threading.current_thread() is threading.main_thread()
    if forwarding:
        previous = signal.signal(signal.SIGTERM, lambda signum, _: process.send_signal(signum))
    try:
        try:
            return process.wait()
        except KeyboardInterrupt:
            # Ctrl-C reached torchrun too: its processes say what they kept; wait for them
            # rather than add a line of this one's and leave them writing.
            return process.wait()
    finally:
        if forwarding:
            signal.signal(signal.SIGTERM, previous)
