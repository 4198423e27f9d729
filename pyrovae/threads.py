"""CPU threads of torch's operators: torch's choice, or set with ``--threads N``.

torch runs each operator on ``torch.get_num_threads()`` threads, by default
one per physical core. ``torchrun`` (and so ``pyrovae train --devices N``)
sets ``OMP_NUM_THREADS=1`` when it is unset, so each of its processes uses
one. On a machine shared with other work the default oversubscribes the
cores: on this project's 2-core machine under load (load average 5-8), the
default digits run trained at 225-455 images/s with torch's default of 2
threads and at 2,000-13,000 images/s with ``--threads 1``. ``--threads``
sets the count (and the inter-op pool's, where torch still allows it).

The count is not part of a run's config.json: like the device, it is how a
run is executed, not what it computes. Whether it changes the last bits of a
CPU run depends on the kernels: torch's matrix products split the output,
not the sum, across threads, but its parallel reductions add in per-thread
chunks. On that machine one epoch on digits gave bit-identical parameters
with 1 and 2 threads (hidden 400, batch 128; hidden 2048, batch 1024);
torch does not promise it.
"""

from __future__ import annotations

from pyrovae.errors import ConfigError


def set_threads(n: int | None) -> None:
    """Run torch's operators on ``n`` threads (``None``: leave torch's choice)."""
    if n is None:
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"--threads must be a whole number >= 1, got {n!r}")
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only allowed before the first inter-op parallel work
        pass


def describe() -> str:
    """``"2 threads"``: how many threads torch's operators run on in this process."""
    import torch

    n = torch.get_num_threads()
    return f"{n} thread" if n == 1 else f"{n} threads"
