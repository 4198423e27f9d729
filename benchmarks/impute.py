"""Imputing Fashion-MNIST: a VAE against mean fill, k-nearest neighbours and chained equations.

Two missing-data patterns on a fixed subset of the test images: 50% of the
pixels missing completely at random, and the centre 14x14 square missing.
Two VAEs (MLP encoder/decoder, Gaussian likelihood with a learned scale per
pixel, Adam, the same budget): one trained on complete images, one on the same
images with 50% of their pixels missing at random (its encoder reads the mask,
its ELBO is over observed pixels). Each imputes with z from q(z|x_obs)
(``none``) and with sampling importance resampling (``sir``,
:mod:`pyrovae.inference.impute`).

Baselines: the per-pixel training mean; scikit-learn's ``KNNImputer`` (k=5)
and ``IterativeImputer`` (BayesianRidge, chained equations), both fit on a
random subset of the complete training images (``--knn-fit``,
``--iterative-fit``; IterativeImputer also with ``--iterative-features``
nearest features and ``--iterative-iter`` rounds) so they finish in minutes.
RMSE is over the missing pixels (intensities in [0, 1]); coverage is the share
of true pixels inside the 90% predictive interval (VAEs only); each with its
standard error over test images.

Usage
-----
    nice -n 10 python benchmarks/impute.py --epochs 5 --train-size 20000 --test-size 500 \\
        --out benchmarks/results/impute

Runs in ``--out`` are reused; the table is printed and written to
``results.md`` and ``results.json`` there.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.api import load_run, train
from pyrovae.data.load import load_dataset
from pyrovae.data.pixels import to_unit_float
from pyrovae.files import CHECKPOINT_NAME
from pyrovae.inference.impute import impute, rmse_over_missing, score_imputation


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--particles", type=int, default=100, help="draws of z per image")
    parser.add_argument("--knn-fit", type=int, default=5000, help="training images KNN uses")
    parser.add_argument("--iterative-fit", type=int, default=1000)
    parser.add_argument("--iterative-features", type=int, default=50)
    parser.add_argument("--iterative-iter", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/impute"))
    return parser.parse_args()


def masks(images: torch.Tensor, seed: int) -> dict[str, torch.Tensor]:
    """True where observed, for each pattern: 50% at random, the centre 14x14 square."""
    generator = torch.Generator().manual_seed(seed)
    random = torch.rand(images.shape, generator=generator) >= 0.5
    centre = torch.ones_like(images, dtype=torch.bool)
    h, w = images.shape[-2:]
    centre[..., (h - 14) // 2 : (h + 14) // 2, (w - 14) // 2 : (w + 14) // 2] = False
    return {"random 50%": random, "centre 14x14": centre}


def fit(name: str, data: torch.Tensor, args: argparse.Namespace) -> Any:
    """Train (or reuse) the VAE in ``args.out / name`` on ``data``; its run."""
    run_dir = args.out / name
    if not (run_dir / CHECKPOINT_NAME).exists():
        started = time.perf_counter()
        train(
            out=run_dir, data=data, epochs=args.epochs, likelihood="gaussian",
            hidden=(args.hidden,), latent_dim=args.latent_dim, seed=args.seed, device="cpu",
            progress=False, log=lambda line: print("   ", line, flush=True),
        )  # fmt: skip
        print(f"   trained {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return load_run(run_dir, device="cpu")


def baselines(args: argparse.Namespace, train_x: torch.Tensor) -> dict[str, Callable[..., Any]]:
    """name -> fill(x_with_nan) for the non-VAE imputers, fit on complete training images."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer, KNNImputer

    flat = train_x.flatten(1).numpy()
    rng = np.random.default_rng(args.seed)
    mean = train_x.mean(0)
    knn = KNNImputer(n_neighbors=5).fit(flat[rng.permutation(len(flat))[: args.knn_fit]])
    iterative = IterativeImputer(
        max_iter=args.iterative_iter,
        n_nearest_features=args.iterative_features,
        random_state=args.seed,
        skip_complete=False,  # fit on complete images: True would leave every feature at the mean
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at this small budget
        iterative.fit(flat[rng.permutation(len(flat))[: args.iterative_fit]])
    print(f"   IterativeImputer fit in {time.perf_counter() - started:.0f} s", flush=True)

    def sklearn_fill(imputer: Any) -> Callable[[torch.Tensor], torch.Tensor]:
        def fill(x: torch.Tensor) -> torch.Tensor:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = imputer.transform(x.flatten(1).numpy())
            return torch.from_numpy(out).float().reshape(x.shape)

        return fill

    return {
        "mean fill": lambda x: torch.where(torch.isnan(x), mean, x),
        f"KNNImputer (k=5, fit on {args.knn_fit})": sklearn_fill(knn),
        f"IterativeImputer (fit on {args.iterative_fit}, {args.iterative_features} "
        f"features, {args.iterative_iter} rounds)": sklearn_fill(iterative),
    }


def row(pattern: str, method: str, rmse: tuple[float, float], cover: Any, s: float) -> dict:
    return {
        "pattern": pattern,
        "method": method,
        "rmse": rmse[0],
        "rmse_se": rmse[1],
        "coverage": None if cover is None else cover[0],
        "coverage_se": None if cover is None else cover[1],
        "seconds": s,
    }


def evaluate(args: argparse.Namespace) -> list[dict[str, Any]]:
    data = load_dataset("fashion-mnist")
    assert isinstance(data.train, torch.Tensor)
    generator = torch.Generator().manual_seed(args.seed)
    chosen = torch.randperm(data.train.shape[0], generator=generator)[: args.train_size]
    train_x = to_unit_float(data.train[chosen])  # (n, 1, 28, 28)
    incomplete = train_x.clone()
    incomplete[torch.rand(train_x.shape, generator=generator) < 0.5] = torch.nan
    test = to_unit_float(data.test[: args.test_size])
    runs = {
        "VAE trained on complete images": fit("complete", train_x, args),
        "VAE trained with 50% missing": fit("incomplete", incomplete, args),
    }
    fills = baselines(args, train_x)
    rows = []
    for pattern, observed in masks(test, args.seed + 1).items():
        x = torch.where(observed, test, torch.nan)
        for method, fill in fills.items():
            started = time.perf_counter()
            filled = fill(x)
            rows.append(row(pattern, method, rmse_over_missing(filled, test, observed), None,
                            time.perf_counter() - started))  # fmt: skip
            print(f"   {pattern} | {method}: RMSE {rows[-1]['rmse']:.4f}", flush=True)
        for name, run in runs.items():
            for refine in ("none", "sir"):
                started = time.perf_counter()
                torch.manual_seed(args.seed)
                imputation = impute(run.vae, x, particles=args.particles, refine=refine)
                score = score_imputation(imputation, test)
                method = f"{name}, {'q(z|x_obs)' if refine == 'none' else 'SIR'}"
                rows.append(row(pattern, method, (score.rmse, score.rmse_stderr),
                                (score.coverage, score.coverage_stderr),
                                time.perf_counter() - started))  # fmt: skip
                print(f"   {pattern} | {method}: RMSE {score.rmse:.4f}", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| missing | method | RMSE (missing pixels) | 90% interval coverage | seconds |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        cover = "—" if r["coverage"] is None else f"{r['coverage']:.3f} ± {r['coverage_se']:.3f}"
        lines.append(
            f"| {r['pattern']} | {r['method']} | {r['rmse']:.4f} ± {r['rmse_se']:.4f} "
            f"| {cover} | {r['seconds']:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = evaluate(args)
    settings = {key: str(value) for key, value in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2)
    )
    text = table(rows)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
