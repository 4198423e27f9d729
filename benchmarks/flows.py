"""Flexible posteriors, priors and objectives on Fashion-MNIST: do they raise log p(x)?

Trains the same VAE (MLP encoder/decoder, Bernoulli likelihood, dynamic
binarization, Adam) with the same epoch budget five ways: the mean-field
baseline, an IAF guide (Kingma et al. 2016), a flow prior (MAF layers), the
VampPrior (Tomczak & Welling 2018) and IWAE training (Burda et al. 2016), then
estimates the test log-likelihood of each by importance sampling with q(z|x)
as proposal (:func:`pyrovae.inference.importance.importance_log_marginal`, K samples per
image) on a fixed subset of the test set (its first ``--test-size`` images,
binarized once with the run's seed, as in training).

Usage
-----
    python benchmarks/flows.py --epochs 5 --test-size 2000 -k 1000 \\
        --out benchmarks/results/flows

Runs and scores already in ``--out`` are reused (an interrupted benchmark
picks up where it stopped); the table is printed and written to
``results.md`` and ``results.json`` in ``--out``. Differences to the first
variant are paired over the same test images, so their standard error is
far below that of each mean.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

from pyrovae.api import resume, train
from pyrovae.config import DataConfig, RunConfig, TrainConfig
from pyrovae.data.pixels import to_unit_float
from pyrovae.data.prepare import prepare_data
from pyrovae.files import CHECKPOINT_NAME
from pyrovae.inference.importance import importance_log_marginal
from pyrovae.inference.objectives import elbo_terms
from pyrovae.model.spec import REGISTRIES, model_config

#: name -> (model options, train options), on top of the shared settings.
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "mean-field": ({}, {}),
    "iaf-guide": ({"guide": "iaf"}, {}),
    "flow-prior": ({"prior": "flow"}, {}),
    "vamp-prior": ({"prior": "vamp"}, {}),
    "iwae": ({}, {"objective": "iwae"}),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("-k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--hidden", type=int, default=400)
    parser.add_argument("--latent-dim", type=int, default=50)
    parser.add_argument("--flows", type=int, default=2)
    parser.add_argument("--flow-hidden", type=int, default=128)
    parser.add_argument("--prior-components", type=int, default=50)
    parser.add_argument("--iwae-particles", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/flows"))
    return parser.parse_args()


def variant_config(args: argparse.Namespace, name: str) -> RunConfig:
    model_options, train_options = VARIANTS[name]
    if train_options.get("objective") == "iwae":
        train_options = {**train_options, "particles": args.iwae_particles}
    return RunConfig(
        data=DataConfig(dataset=args.dataset, binarize="dynamic"),
        model=model_config(
            likelihood="bernoulli",
            network="mlp",
            hidden=(args.hidden,),
            latent_dim=args.latent_dim,
            **model_options,
            **_component_options(args, model_options),
        ),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=args.batch_size,
            seed=args.seed,
            device="cpu",
            **train_options,
        ),
    )


def _component_options(args: argparse.Namespace, chosen: dict[str, Any]) -> dict[str, Any]:
    """The shared flow and mixture settings, for the chosen components that take them."""
    shared = {
        "flows": args.flows,
        "flow_hidden": (args.flow_hidden,),
        "prior_components": args.prior_components,
    }
    classes = [REGISTRIES[kind].get(chosen[kind]) for kind in ("guide", "prior") if kind in chosen]
    return {
        name: value
        for name, value in shared.items()
        if any(cls.option(name) is not None for cls in classes)
    }


def fit(config: RunConfig, run_dir: Path) -> tuple[Any, float]:
    """Train (or finish, or reuse) the run in ``run_dir``; the VAE and its training seconds."""
    quiet = {"progress": False, "log": lambda line: print("   ", line, flush=True)}
    if (run_dir / CHECKPOINT_NAME).exists():
        result = resume(run_dir, epochs=config.train.epochs, **quiet)
    else:
        result = train(config, run_dir, **quiet)
    seconds = sum(row["seconds"] for row in result.history)
    return result, seconds


def evaluate(result: Any, test_size: int, k: int, seed: int) -> dict[str, Any]:
    """IS log p(x) and ELBO of each test image, cached in the run folder (``scores.pt``)."""
    path = result.run_dir / "scores.pt"
    if path.exists():
        cached = torch.load(path, weights_only=True)
        if (cached["k"], cached["test_size"], cached["seed"]) == (k, test_size, seed):
            return cached
    data = prepare_data(result.config, torch.device("cpu"), binary=True)
    images = data.test[:test_size]
    torch.manual_seed(seed)
    started = time.perf_counter()
    log_px = importance_log_marginal(result.vae, images, k=k).cpu()
    with torch.no_grad():
        terms = elbo_terms(result.vae.model, result.vae.guide, to_unit_float(images))
    scores = {
        "k": k,
        "test_size": test_size,
        "seed": seed,
        "log_px": log_px,
        "elbo": terms.elbo.detach().double().cpu(),
        "kl": terms.kl.detach().double().cpu(),
        "eval_seconds": time.perf_counter() - started,
    }
    torch.save(scores, path)
    return scores


def summary(
    name: str, train_seconds: float, scores: dict[str, Any], base: dict[str, Any]
) -> dict[str, Any]:
    """One table row; differences to ``base`` are paired (same images), with their stderr."""
    n = scores["log_px"].numel()
    diff = scores["log_px"] - base["log_px"]
    return {
        "variant": name,
        "log_px": scores["log_px"].mean().item(),
        "log_px_se": (scores["log_px"].std() / n**0.5).item(),
        "delta": diff.mean().item(),
        "delta_se": (diff.std() / n**0.5).item(),
        "elbo": scores["elbo"].mean().item(),
        "kl": scores["kl"].mean().item(),
        "train_seconds": train_seconds,
        "eval_seconds": scores["eval_seconds"],
    }


def table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        f"| variant | test log p(x), IS K={args.k} | vs {rows[0]['variant']} (paired) "
        "| test ELBO | KL | log p(x) - ELBO | train s |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['variant']} | {row['log_px']:.2f} ± {row['log_px_se']:.2f} "
            f"| {row['delta']:+.2f} ± {row['delta_se']:.2f} "
            f"| {row['elbo']:.2f} | {row['kl']:.2f} | {row['log_px'] - row['elbo']:.2f} "
            f"| {row['train_seconds']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    runs = {}
    for name in args.only:
        print(f"== {name}", flush=True)
        result, train_seconds = fit(variant_config(args, name), args.out / name)
        scores = evaluate(result, args.test_size, args.k, args.seed)
        print(f"   log p(x) {scores['log_px'].mean():.2f}  ELBO {scores['elbo'].mean():.2f}")
        runs[name] = (train_seconds, scores)
    base = runs[args.only[0]][1]
    rows = [summary(name, seconds, scores, base) for name, (seconds, scores) in runs.items()]
    settings = {key: str(value) for key, value in vars(args).items()}
    (args.out / "results.json").write_text(
        json.dumps({"settings": settings, "rows": rows}, indent=2)
    )
    text = table(rows, args)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
