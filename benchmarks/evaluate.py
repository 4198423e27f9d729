"""Cost of importance-sampled log p(x): pyrovae against a plain PyTorch loop, memory in K.

Three measurements on one trained run (without ``--run`` a small model, MLP
784-400-50, Bernoulli, is trained on Fashion-MNIST first, for ``--epochs``):

1. Side by side (default): on the first ``--n`` test images, with K =
   ``--k``, pyrovae's estimator (:func:`pyrovae.inference.importance.importance_all`,
   chunks sized by its memory budget, accumulating log p(x), the ELBO, its two
   terms and every Monte Carlo variance) and :func:`plain_log_px`, an
   importance-sampling loop written the way one writes it by hand in PyTorch
   (same encoder and decoder modules, same images x samples per step, only
   log p(x)). ``--reps`` repetitions, alternating which goes first; the
   median time of each, their spread (min-max) and the ratio of the medians
   (plain / pyrovae: above 1 means pyrovae is faster), also from process CPU
   time (less disturbed by other work on a shared machine).
2. ``--memory``: for each K (default 100, 1000, 5000) a fresh child process
   runs pyrovae's estimator on ``--n`` images and reports its peak RSS above
   the RSS before the call (Linux ``VmHWM``, reset through
   ``/proc/self/clear_refs``); past the memory budget it must not grow with K.
3. ``--full``: K = ``--k`` over all 10,000 test images, a line every 500
   images (``--step``) with the wall and CPU time so far, so that a run stopped early still
   gives a measured rate for a measured fraction (CPU time: the rate on a
   machine shared with other work).

``--device cuda`` runs all three on a GPU (``benchmarks/gpu.sh``): the clock is
read after ``torch.cuda.synchronize``, and ``--memory`` reports the peak of
``torch.cuda.memory_allocated`` above before instead of the RSS. pyrovae's chunks
come from ``--memory-budget`` (default: the device's, a quarter of a GPU's free
memory, read once), so on a large GPU K = 5000 fits one chunk and memory grows
with K up to that budget: give ``--memory-budget 256M`` to see it bounded.

Run from the repository root, one thread (``--threads``, default 1)::

    python benchmarks/evaluate.py --run runs/fm --n 500 --k 1000 --reps 5
    python benchmarks/evaluate.py --run runs/fm --memory --n 100 --k 100 1000 5000
    nice -n 10 python benchmarks/evaluate.py --run runs/fm --full --k 5000
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

FULL_TEST_SET = 10_000
_LOG_2PI = math.log(2 * math.pi)


@torch.no_grad()
def plain_log_px(
    vae: Any, images: torch.Tensor, k: int, batch_size: int, chunk: int
) -> torch.Tensor:
    """log p(x) per image by importance sampling, written plainly: a Gaussian q(z|x),
    N(0, I) prior and Bernoulli decoder, the K log-weights kept and reduced at the end."""
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size]
        x = x.float() / 255 if x.dtype == torch.uint8 else x  # (batch, 1, 28, 28), binary
        qz = vae.qz(x)
        loc, scale = qz.mean, qz.stddev  # (batch, L)
        log_w = []
        for s in range(0, k, chunk):
            eps = torch.randn(min(chunk, k - s), *loc.shape, device=loc.device)  # (chunk, batch, L)
            z = loc + scale * eps
            logits = vae.decoder(z)  # (chunk, batch, 1, 28, 28)
            log_px_z = (
                -F.binary_cross_entropy_with_logits(logits, x.expand_as(logits), reduction="none")
                .flatten(2)
                .sum(-1)
            )
            log_pz = -0.5 * (z**2).sum(-1)
            log_qz = -0.5 * (eps**2).sum(-1) - scale.log().sum(-1)
            log_w.append(log_px_z + log_pz - log_qz)  # the 2 pi terms cancel
        out.append(torch.logsumexp(torch.cat(log_w), 0) - math.log(k))
    return torch.cat(out)


def memory_budget(device: torch.device, text: str | None = None) -> int:
    """Bytes a chunk of draws may take: ``text`` (``--memory-budget``), else the device's
    default, read once, as the free memory a GPU reports shrinks while torch's cache fills."""
    from pyrovae.inference.importance import default_memory_budget, parse_memory_budget

    return parse_memory_budget(text) or default_memory_budget(device)


def side_by_side(
    run_dir: str,
    n: int,
    k: int,
    reps: int,
    batch_size: int,
    device: str = "cpu",
    budget_text: str | None = None,
) -> dict[str, Any]:
    """Alternated repetitions of pyrovae's estimator and :func:`plain_log_px`."""
    from pyrovae.api import load_run
    from pyrovae.inference.importance import auto_chunk_size, importance_all
    from pyrovae.runtime import synchronize

    run = load_run(run_dir, device=device)
    images = run.data().test[:n]
    vae = run.vae.eval()
    budget = memory_budget(run.device, budget_text)
    # As importance_all sizes it (a batch holds at most n images): both sides alike.
    chunk = min(k, auto_chunk_size(vae, min(batch_size, images.shape[0]), budget))
    runners = {
        "pyrovae": lambda: (
            importance_all(vae, images, k, None, batch_size, False, memory_budget=budget).log_px
        ),
        "plain": lambda: plain_log_px(vae, images, k, batch_size, chunk),
    }
    torch.manual_seed(0)  # warm-up: first-call allocations
    importance_all(vae, images[:4], 8, None, 4, False)
    plain_log_px(vae, images[:4], 8, 4, 8)
    times: dict[str, list[float]] = {name: [] for name in runners}
    cpu: dict[str, list[float]] = {name: [] for name in runners}
    values: dict[str, float] = {}
    for rep in range(reps):
        order = list(runners) if rep % 2 == 0 else list(reversed(runners))
        for name in order:
            torch.manual_seed(rep)
            synchronize(run.device)
            started, cpu_started = time.perf_counter(), time.process_time()
            log_px = runners[name]()
            synchronize(run.device)
            times[name].append(time.perf_counter() - started)
            cpu[name].append(time.process_time() - cpu_started)
            values[name] = float(log_px.mean())
    med = {name: statistics.median(t) for name, t in times.items()}
    med_cpu = {name: statistics.median(t) for name, t in cpu.items()}
    pairs = [p / q for p, q in zip(times["plain"], times["pyrovae"], strict=True)]
    return {
        "device": str(run.device),
        "n": images.shape[0],
        "k": k,
        "batch_size": batch_size,
        "chunk": chunk,
        "memory_budget": budget,
        "reps": reps,
        "seconds": times,
        "median_seconds": med,
        "cpu_seconds": cpu,
        "speed_ratio": med["plain"] / med["pyrovae"],
        "cpu_speed_ratio": med_cpu["plain"] / med_cpu["pyrovae"],
        "pair_ratios": pairs,
        "log_px": values,
    }


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_worker(
    run_dir: str,
    n: int,
    k: int,
    batch_size: int = 100,
    device: str = "cpu",
    budget_text: str | None = None,
) -> dict[str, Any]:
    """In a child process: pyrovae's estimator once, its time and peak memory above
    before (the CPU's peak RSS; on a GPU, the peak of ``torch.cuda.memory_allocated``)."""
    from pyrovae.api import load_run
    from pyrovae.inference.importance import auto_chunk_size, importance_all
    from pyrovae.runtime import synchronize

    run = load_run(run_dir, device=device)
    images = run.data().test[:n]
    budget = memory_budget(run.device, budget_text)
    importance_all(run.vae, images[:4], 8, None, 4, False)  # warm-up
    cuda = run.device.type == "cuda"
    if cuda:
        synchronize(run.device)
        before = torch.cuda.memory_allocated(run.device) / 2**20
        torch.cuda.reset_peak_memory_stats(run.device)
    else:
        before = _status_kib("VmRSS") / 1024
        Path("/proc/self/clear_refs").write_text("5")  # peak RSS (VmHWM) := RSS now
    torch.manual_seed(0)
    started = time.perf_counter()
    estimate = importance_all(run.vae, images, k, None, batch_size, False, memory_budget=budget)
    synchronize(run.device)
    seconds = time.perf_counter() - started
    peak = (
        torch.cuda.max_memory_allocated(run.device) / 2**20 if cuda else _status_kib("VmHWM") / 1024
    )
    return {
        "k": k,
        "n": images.shape[0],
        "device": str(run.device),
        "chunk": min(k, auto_chunk_size(run.vae, min(batch_size, images.shape[0]), budget)),
        "seconds": seconds,
        "peak_above_before_mib": peak - before,
        "before_mib": before,
        "log_px": float(estimate.log_px.mean()),
    }


def full_test_set(
    run_dir: str,
    k: int,
    step: int = 500,
    batch_size: int = 100,
    device: str = "cpu",
    budget_text: str | None = None,
) -> None:
    """K draws per image over the whole test set, a JSON line every ``step`` images."""
    from pyrovae.api import load_run
    from pyrovae.inference.importance import ImportanceEstimate, auto_chunk_size, importance_all
    from pyrovae.inference.stats import mc_standard_error, standard_error
    from pyrovae.runtime import synchronize

    run = load_run(run_dir, device=device)
    images = run.data().test
    torch.manual_seed(0)
    budget = memory_budget(run.device, budget_text)
    chunk = min(k, auto_chunk_size(run.vae, min(batch_size, step), budget))
    print(json.dumps({"device": str(run.device), "batch_size": batch_size, "chunk": chunk,
                      "memory_budget": budget}), flush=True)  # fmt: skip
    started, cpu_started, parts = time.perf_counter(), time.process_time(), []
    for start in range(0, images.shape[0], step):
        batch = images[start : start + step]
        part = importance_all(run.vae, batch, k, None, batch_size, False, memory_budget=budget)
        parts.append(part)
        synchronize(run.device)  # the clock below counts the GPU's queued work
        done = ImportanceEstimate.cat(parts)
        row = {
            "images": done.log_px.shape[0],
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu_started,
            "log_px": float(done.log_px.mean()),
            "stderr": standard_error(done.log_px),
            "mc_stderr": mc_standard_error(done.log_px_var),
        }
        print(json.dumps(row), flush=True)


def train_small(out: Path, epochs: int, device: str = "cpu") -> Path:
    from pyrovae.api import train
    from pyrovae.config import DataConfig, RunConfig, TrainConfig
    from pyrovae.model.spec import model_config

    config = RunConfig(
        data=DataConfig(dataset="fashion-mnist"),
        model=model_config(hidden=(400,), latent_dim=50),
        train=TrainConfig(epochs=epochs, batch_size=256, device=device),  # type: ignore[arg-type]
    )
    train(config, out, progress=False)
    return out


def _print_side_by_side(row: dict[str, Any]) -> None:
    print(
        f"n={row['n']} K={row['k']} batch {row['batch_size']} x chunk {row['chunk']}, "
        f"{row['reps']} alternated repetitions, {torch.get_num_threads()} thread(s)"
    )
    for name in ("pyrovae", "plain"):
        t = row["seconds"][name]
        print(
            f"  {name:<8} median {row['median_seconds'][name]:7.2f} s "
            f"(min {min(t):.2f}, max {max(t):.2f})  log p(x) {row['log_px'][name]:.2f}"
        )
    pairs = row["pair_ratios"]
    print(
        f"  plain / pyrovae time: {row['speed_ratio']:.2f}x (medians); "
        f"per repetition {min(pairs):.2f}-{max(pairs):.2f}; "
        f"from CPU time {row['cpu_speed_ratio']:.2f}x"
    )


def _memory_rows(
    run_dir: str,
    n: int,
    ks: list[int],
    threads: int,
    batch_size: int,
    device: str,
    budget_text: str | None,
) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        command = [sys.executable, __file__, "--worker", "--run", run_dir, "--n", str(n)]
        command += ["--k", str(k), "--threads", str(threads), "--batch-size", str(batch_size)]
        command += ["--device", device, "--memory-budget", budget_text or "auto"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:  # the child's own error, not only its exit status
            raise SystemExit(f"the K={k} worker failed:\n{done.stderr.strip()}")
        row = json.loads(done.stdout.strip().splitlines()[-1])
        what = "peak allocated" if device.startswith("cuda") else "peak RSS"
        print(
            f"K={k:>5}  n={row['n']}  chunk {row['chunk']:>5}  {row['seconds']:7.1f} s  {what} "
            f"+{row['peak_above_before_mib']:.0f} MiB over {row['before_mib']:.0f} MiB before"
            f"  log p(x) {row['log_px']:.2f}"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=None, help="A trained run; default: train one.")
    parser.add_argument("--n", type=int, default=500, help="Test images evaluated.")
    parser.add_argument("--k", type=int, nargs="+", default=None)
    parser.add_argument("--reps", type=int, default=5, help="Alternated repetitions.")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--memory", action="store_true", help="Peak RSS for each K.")
    parser.add_argument("--full", action="store_true", help="All 10,000 test images.")
    parser.add_argument("--step", type=int, default=500, help="--full: images per line.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda: where both sides run.")
    parser.add_argument(
        "--memory-budget",
        default=None,
        help="Bytes a chunk of draws may take (256M, 1G; default: the device's, read once).",
    )
    parser.add_argument("--epochs", type=int, default=3, help="Epochs of the model trained.")
    parser.add_argument("--json", default=None, help="Write the results here.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    if args.worker:
        row = memory_worker(
            args.run, args.n, args.k[0], args.batch_size, args.device, args.memory_budget
        )
        print(json.dumps(row))
        return
    run_dir = args.run or str(
        train_small(Path(tempfile.mkdtemp()) / "fm", args.epochs, args.device)
    )
    if args.full:
        k = (args.k or [5000])[0]
        full_test_set(run_dir, k, args.step, args.batch_size, args.device, args.memory_budget)
        return
    if args.memory:
        ks = args.k or [100, 1000, 5000]
        summary: Any = _memory_rows(
            run_dir, args.n, ks, args.threads, args.batch_size, args.device, args.memory_budget
        )
    else:
        k = (args.k or [1000])[0]
        summary = side_by_side(
            run_dir, args.n, k, args.reps, args.batch_size, args.device, args.memory_budget
        )
        _print_side_by_side(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    from pyrovae.errors import PyrovaeError

    try:
        main()
    except PyrovaeError as err:  # a run that is not there, or cannot be read
        raise SystemExit(f"error: {err}") from None
