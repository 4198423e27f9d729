"""Test log-likelihood at an equal wall-clock budget: pyrovae's presets against plain code.

Trains, each for ``--budget`` seconds of wall time on one CPU thread, on
Fashion-MNIST dynamically binarized (a fresh Bernoulli draw of every training
batch):

1. ``plain``: a VAE written the ordinary way in this script: MLP 784-400-50,
   Gaussian q(z|x), N(0, I) prior, Bernoulli decoder with logits, analytic KL,
   ``torch.optim.Adam`` (lr 1e-3), batch 128, stopped when the budget is spent;
2. ``pythae-vae`` and ``pythae-vamp``: pythae's VAE and VAMP (Tomczak & Welling
   2018) with its default MLP networks, latent 50, ``bce`` loss, trained by the
   same loop on ``model({"data": x}).loss`` (pythae's trainer has no time
   budget), when ``import pythae`` works; otherwise a line says they are skipped;
3. ``pyrovae-fast`` and ``pyrovae-best``: ``pyrovae train --preset fast|best``
   with ``--latent-dim 50`` (MLP 784-400-50 as above), ``--epochs 100000
   --max-time BUDGET --eval-every 10 --eval-size 500 --threads 1``, so that
   the budget, not the epochs, ends them (pyrovae's own evaluations and
   checkpoints count against it; every 10 epochs on 500 test images, they
   take under 5% of it, as a user with a time budget would set them).

Then ONE evaluator scores every model: importance sampling with the model's
own q(z|x) as proposal, K = ``-k`` draws per image,

log p(x) ≈ log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x),

on the first ``--test-size`` test images (default 2000, K = 1000; ``--full``:
all 10,000 with K = 5000), binarized once with a fixed seed and the same for
every model. Each model only supplies its log-weights log p(x, z_k) - log
q(z_k|x) (:class:`Scorer`); the estimator, the images and the random stream are
shared. The table gives log p(x) and the ELBO (the mean log-weight, same draws)
with their standard errors over images, and the difference to ``plain`` paired
over the same images.

Usage, from the repository root::

    python benchmarks/quality.py                              # 600 s each, K=1000 on 2000 images
    python benchmarks/quality.py --full                       # K=5000 on all 10,000
    python benchmarks/quality.py --budget 20 --test-size 200 -k 50   # a check that it runs
    python benchmarks/quality.py --score runs/a runs/b --out /tmp/scored   # score runs, a vs b
    python benchmarks/quality.py --score runs/a --weights trained,average  # a without, with its EMA

Results go to ``--out`` (``results.md``, ``results.json``; the runs and the
plain models beside them).
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DATA_DIR = "/usr/share/datasets/fashion-mnist"
LATENT, HIDDEN, PIXELS = 50, 400, 784
#: Log-weights ``(k, batch)`` of images ``(batch, 1, 28, 28)`` for ``k`` draws.
Scorer = Callable[[torch.Tensor, int], torch.Tensor]


def read_idx(data_dir: str, split: str) -> torch.Tensor:
    """The images of ``split`` (``train`` or ``t10k``) as floats in [0, 1], ``(N, 1, 28, 28)``."""
    path = Path(data_dir) / f"{split}-images-idx3-ubyte.gz"
    raw = gzip.decompress(path.read_bytes())
    n = int.from_bytes(raw[4:8], "big")
    pixels = np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, 1, 28, 28)
    return torch.from_numpy(pixels.copy()).float() / 255


# --- the plain PyTorch VAE -------------------------------------------------------------


class PlainVAE(nn.Module):
    """MLP 784-400-50 encoder and 50-400-784 decoder, as one writes it by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(PIXELS, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, 2 * LATENT))  # fmt: skip
        self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.ReLU(),
                                     nn.Linear(HIDDEN, PIXELS))  # fmt: skip

    def q(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.encoder(x).chunk(2, dim=-1)  # (batch, L) each
        return loc, log_scale

    def loss(self, x: torch.Tensor) -> torch.Tensor:
        """Minus the ELBO, averaged over the batch."""
        loc, log_scale = self.q(x)
        z = loc + log_scale.exp() * torch.randn_like(loc)
        logits = self.decoder(z)
        recon = F.binary_cross_entropy_with_logits(logits, x.flatten(1), reduction="sum")
        kl = 0.5 * (loc**2 + (2 * log_scale).exp() - 1 - 2 * log_scale).sum()
        return (recon + kl) / x.shape[0]

    @torch.no_grad()
    def log_weights(self, x: torch.Tensor, k: int) -> torch.Tensor:
        loc, log_scale = self.q(x)
        eps = torch.randn(k, *loc.shape)  # (k, batch, L)
        z = loc + log_scale.exp() * eps
        logits = self.decoder(z)  # (k, batch, 784)
        target = x.flatten(1).expand_as(logits)
        log_px_z = -F.binary_cross_entropy_with_logits(logits, target, reduction="none").sum(-1)
        log_pz = -0.5 * (z**2).sum(-1)
        log_qz = -0.5 * (eps**2).sum(-1) - log_scale.sum(-1)
        return log_px_z + log_pz - log_qz  # the 2 pi terms cancel


def train_for(model: nn.Module, loss: Callable[[torch.Tensor], torch.Tensor],
              train: torch.Tensor, budget: float, seed: int) -> dict[str, Any]:  # fmt: skip
    """Adam (lr 1e-3) on ``loss`` over batches of 128, dynamically binarized, for ``budget`` s."""
    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    started, steps, seen = time.perf_counter(), 0, 0
    while time.perf_counter() - started < budget:
        for index in torch.randperm(train.shape[0]).split(128):
            x = torch.bernoulli(train[index])
            optimizer.zero_grad(set_to_none=True)
            loss(x).backward()
            optimizer.step()
            steps, seen = steps + 1, seen + x.shape[0]
            if time.perf_counter() - started >= budget:
                break
    return {"train_seconds": time.perf_counter() - started, "steps": steps,
            "epochs": seen / train.shape[0]}  # fmt: skip


# --- pythae ----------------------------------------------------------------------------


def pythae_models() -> dict[str, Any] | None:
    """pythae's VAE and VAMP (default MLPs, latent 50, bce), or None without pythae."""
    try:
        from pythae.models import VAE, VAMP, VAEConfig, VAMPConfig
    except ImportError:
        return None
    shape = (1, 28, 28)
    return {
        "pythae-vae": VAE(VAEConfig(input_dim=shape, latent_dim=LATENT, reconstruction_loss="bce")),
        "pythae-vamp": VAMP(VAMPConfig(input_dim=shape, latent_dim=LATENT,
                                       reconstruction_loss="bce", number_components=50)),
    }  # fmt: skip


def _normal_log_prob(z: torch.Tensor, loc: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return (-0.5 * (math.log(2 * math.pi) + log_var + (z - loc) ** 2 / log_var.exp())).sum(-1)


def trains_with_tanh(model: Any) -> bool:
    """Whether this pythae's VAMP bounds q(z|x)'s log-variances by tanh in training: some
    of pythae's GitHub sources do, the released 0.1.2 does not. Read off its own
    ``forward``: the code it draws from one seed against the draw with the raw
    log-variances."""
    x = torch.full((2, 1, 28, 28), 0.5)
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        z = model({"data": x}).z
        out = model.encoder(x)
        torch.manual_seed(0)
        raw = out.embedding + (0.5 * out.log_covariance).exp() * torch.randn_like(out.embedding)
    return not torch.allclose(z, raw, atol=1e-6)


def check_vamp_prior(model: Any, squash: bool) -> None:
    """Stop unless the VAMP's own ``_log_p_z``, plus the 2 pi term it leaves out, is the
    normalized mixture of its pseudo-inputs' q(z|u_c) (written out here with
    torch.distributions, on a few codes): a pythae whose prior is not that density
    cannot be scored by importance sampling as it trains."""
    from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(0)
        pseudo = model.pseudo_inputs(model.idle_input).reshape(-1, *model.model_config.input_dim)
        out = model.encoder(pseudo)
        log_var = torch.tanh(out.log_covariance) if squash else out.log_covariance
        components = Independent(Normal(out.embedding, (0.5 * log_var).exp()), 1)
        mixture = MixtureSameFamily(Categorical(logits=torch.zeros(log_var.shape[0])), components)
        z = mixture.sample((8,)) + 0.5 * torch.randn(8, LATENT)  # near the mixture and off it
        own = model._log_p_z(z) - 0.5 * LATENT * math.log(2 * math.pi)
    if not torch.allclose(own, mixture.log_prob(z), atol=1e-3, rtol=1e-5):
        from importlib.metadata import version

        raise SystemExit(
            f"pythae {version('pythae')}: its VAMP's prior (_log_p_z) is not the normalized "
            "mixture over its pseudo-inputs, so it cannot be scored as trained (pythae 0.1.2's can)"
        )


def pythae_scorer(model: Any, vamp: bool) -> Scorer:
    """Log-weights of a pythae VAE or VAMP, from its encoder and decoder as its training
    uses them: the VAMP's prior is its own ``_log_p_z`` (the mixture of q(z|u_c) over its
    pseudo-inputs, Tomczak & Welling) with the 2 pi term it leaves out, and q(z|x)'s
    log-variances are bounded by tanh only where its ``forward`` bounds them
    (:func:`trains_with_tanh`)."""
    squash = vamp and trains_with_tanh(model)
    if vamp:
        check_vamp_prior(model, squash)

    @torch.no_grad()
    def log_weights(x: torch.Tensor, k: int) -> torch.Tensor:
        model.eval()
        out = model.encoder(x)
        loc = out.embedding  # (batch, L)
        log_var = torch.tanh(out.log_covariance) if squash else out.log_covariance
        z = loc + (0.5 * log_var).exp() * torch.randn(k, *loc.shape)  # (k, batch, L)
        probs = model.decoder(z.reshape(-1, LATENT))["reconstruction"].reshape(k, x.shape[0], -1)
        probs = probs.clamp(1e-7, 1 - 1e-7)
        target = x.flatten(1)
        log_px_z = (target * probs.log() + (1 - target) * (-probs).log1p()).sum(-1)
        if vamp:
            log_pz = model._log_p_z(z.reshape(-1, LATENT)).reshape(k, x.shape[0])
            log_pz = log_pz - 0.5 * LATENT * math.log(2 * math.pi)
        else:
            log_pz = _normal_log_prob(z, torch.zeros(()), torch.zeros(()))
        return log_px_z + log_pz - _normal_log_prob(z, loc, log_var)

    return log_weights


# --- pyrovae ---------------------------------------------------------------------------


def train_pyrovae(preset: str, out: Path, args: argparse.Namespace) -> dict[str, Any]:
    """``pyrovae train --preset PRESET`` for the budget, in a child process."""
    if not (out / "checkpoint.pt").exists():
        command = [
            sys.executable, "-m", "pyrovae", "train", "--preset", preset,
            "--dataset", "fashion-mnist", "--data-dir", args.data_dir, "--latent-dim", str(LATENT),
            "--epochs", "100000", "--max-time", str(args.budget),
            "--eval-every", "10", "--eval-size", "500",
            "--threads", "1", "--seed", str(args.seed), "--no-progress", "--out", str(out),
        ]  # fmt: skip
        print("   ", " ".join(command[1:]), flush=True)
        started = time.perf_counter()
        subprocess.run(command, check=True)
        (out / "wall.json").write_text(json.dumps({"wall": time.perf_counter() - started}))
    wall = json.loads((out / "wall.json").read_text())["wall"]
    return {**run_budget(out), "wall": wall}


def run_budget(run_dir: Path) -> dict[str, Any]:
    """Seconds in training steps and epochs of a pyrovae run, from its ``metrics.jsonl``."""
    from pyrovae.api import read_metrics

    rows = read_metrics(run_dir)
    return {"train_seconds": sum(r["seconds"] for r in rows), "epochs": len(rows)}


def run_weights(run_dir: Path, asked: list[str]) -> list[str]:
    """The weights of ``asked`` to score in ``run_dir``: as asked for a run whose last
    checkpoint holds an average (``--ema``); once (``average``, which is then the trained
    weights) for a run without. ``load_run`` decides which, as for every command."""
    from pyrovae.api import load_run

    if load_run(run_dir, device="cpu", checkpoint="last").weights == "average":
        return asked
    if "trained" in asked:
        print(f"   {run_dir.name}: trained without --ema, scored once (its only weights)")
    return ["average"]


def pyrovae_scorer(run_dir: Path, device: str = "cpu", weights: str = "average") -> Scorer:
    """Log-weights of a pyrovae run (its last checkpoint; ``weights``: the EMA's average
    or the trained weights of a run trained with ``--ema``), from the distributions
    its model and guide use, on ``device``."""
    from pyrovae.api import load_run

    vae = load_run(run_dir, device=device, checkpoint="last", weights=weights).vae

    @torch.no_grad()
    def log_weights(x: torch.Tensor, k: int) -> torch.Tensor:
        qz = vae.qz(x)
        z = qz.sample((k,))  # (k, batch, L)
        return vae.log_px(x, z) + vae.prior().log_prob(z) - qz.log_prob(z)

    return log_weights


# --- the one evaluator -----------------------------------------------------------------


def importance_log_px(
    scorer: Scorer, images: torch.Tensor, k: int, seed: int, draws_per_call: int = 50_000
) -> tuple[torch.Tensor, torch.Tensor]:
    """log p(x) and the ELBO of each image (``(n,)`` each) by importance sampling with K = ``k``;
    the same random stream for every model."""
    torch.manual_seed(seed)
    batch = max(1, min(images.shape[0], draws_per_call // k))
    log_px, elbo = [], []
    for start in range(0, images.shape[0], batch):
        x = images[start : start + batch]
        chunk = max(1, draws_per_call // x.shape[0])
        log_w = torch.cat([scorer(x, min(chunk, k - s)) for s in range(0, k, chunk)])  # (k, b)
        log_px.append(torch.logsumexp(log_w, 0) - math.log(k))
        elbo.append(log_w.mean(0))
    return torch.cat(log_px), torch.cat(elbo)


def summary(name: str, scores: dict[str, torch.Tensor], base: torch.Tensor) -> dict[str, Any]:
    n = scores["log_px"].shape[0]

    def mean_se(values: torch.Tensor) -> tuple[float, float]:
        return values.mean().item(), (values.std() / n**0.5).item()

    log_px, log_px_se = mean_se(scores["log_px"])
    elbo, elbo_se = mean_se(scores["elbo"])
    delta, delta_se = mean_se(scores["log_px"] - base)
    return {"model": name, "log_px": log_px, "log_px_se": log_px_se, "elbo": elbo,
            "elbo_se": elbo_se, "delta": delta, "delta_se": delta_se}  # fmt: skip


def table(rows: list[dict[str, Any]], args: argparse.Namespace, n: int, base: str = "plain") -> str:
    lines = [
        f"| model | log p(x), IS K={args.k}, {n} images | vs {base} (paired) | ELBO "
        "| train s | epochs |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['log_px']:.2f} ± {r['log_px_se']:.2f} "
            f"| {r['delta']:+.2f} ± {r['delta_se']:.2f} | {r['elbo']:.2f} ± {r['elbo_se']:.2f} "
            f"| {r['train_seconds']:.0f} | {r['epochs']:.3g} |"
        )
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds of training each")
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("-k", type=int, default=1000, help="importance samples per image")
    parser.add_argument("--full", action="store_true", help="K=5000 on all 10,000 test images")
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/quality"))
    parser.add_argument(
        "--score", type=Path, nargs="+", default=None, metavar="RUN",
        help="train nothing: score these pyrovae run folders with the same evaluator, "
        "each paired against the first",
    )  # fmt: skip
    parser.add_argument(
        "--weights", default="average", metavar="average,trained",
        help="with --score: which weights of a run trained with --ema to score, "
        "comma-separated (average,trained scores both: the same training with and "
        "without its average; the trained weights' row is named RUN:trained)",
    )  # fmt: skip
    args = parser.parse_args()
    args.weights = [w for w in args.weights.replace(" ", "").split(",") if w]
    if not args.weights or not set(args.weights) <= {"average", "trained"}:
        parser.error(f"--weights takes average, trained or both, got {','.join(args.weights)!r}")
    if args.weights != ["average"] and not args.score:
        parser.error("--weights chooses the weights of the runs given to --score")
    if args.full:
        args.k, args.test_size = 5000, 10_000
    return args


def main() -> None:
    from pyrovae.errors import PyrovaeError

    args = parse_args()
    torch.set_num_threads(1)
    scorers: dict[str, Scorer] = {}
    budgets: dict[str, dict[str, Any]] = {}
    if args.score:  # the runs are checked before the data are read
        try:
            score_runs(args.score, args.weights, scorers, budgets)
        except (PyrovaeError, OSError) as err:
            raise SystemExit(f"--score: {err}") from None
    try:
        train = read_idx(args.data_dir, "train")
        test = read_idx(args.data_dir, "t10k")[: args.test_size]
    except OSError as err:
        raise SystemExit(f"--data-dir: cannot read Fashion-MNIST's IDX files: {err}") from None
    test = torch.bernoulli(test, generator=torch.Generator().manual_seed(args.seed))
    args.out.mkdir(parents=True, exist_ok=True)
    if args.score:
        report(scorers, budgets, test, args, base=next(iter(scorers)))
        return

    print(f"== plain: {args.budget:g} s", flush=True)
    plain = PlainVAE()
    budgets["plain"] = train_for(plain, plain.loss, train, args.budget, args.seed)
    scorers["plain"] = plain.log_weights

    models = pythae_models()
    if models is None:
        print("== pythae: skipped (`import pythae` fails; pip install pythae to compare it)")
    else:
        for name, model in models.items():
            print(f"== {name}: {args.budget:g} s", flush=True)

            def loss(x: torch.Tensor, model: Any = model) -> torch.Tensor:
                return model({"data": x}).loss

            budgets[name] = train_for(model, loss, train, args.budget, args.seed)
            scorers[name] = pythae_scorer(model, vamp=name.endswith("vamp"))

    for preset in ("fast", "best"):
        name = f"pyrovae-{preset}"
        print(f"== {name}: {args.budget:g} s", flush=True)
        budgets[name] = train_pyrovae(preset, args.out / name, args)
        scorers[name] = pyrovae_scorer(args.out / name)

    report(scorers, budgets, test, args, base="plain")


def score_runs(
    runs: list[Path],
    weights_asked: list[str],
    scorers: dict[str, Scorer],
    budgets: dict[str, dict[str, Any]],
) -> None:
    """Fill ``scorers`` and ``budgets`` with the ``--score`` runs, each under its folder's
    name (``NAME:trained`` for the trained weights of a run with an average)."""
    names = [run.name for run in runs]
    if len(set(names)) < len(names):
        raise SystemExit(f"--score: run folders need distinct names, got {names}")
    for run in runs:
        for weights in run_weights(run, weights_asked):
            name = run.name if weights == "average" else f"{run.name}:{weights}"
            budgets[name] = run_budget(run)
            scorers[name] = pyrovae_scorer(run, weights=weights)


def report(
    scorers: dict[str, Scorer],
    budgets: dict[str, dict[str, Any]],
    test: torch.Tensor,
    args: argparse.Namespace,
    base: str,
) -> None:
    """Score every model with the one evaluator; write and print the table."""
    scores = {}
    for name, scorer in scorers.items():
        started = time.perf_counter()
        log_px, elbo = importance_log_px(scorer, test, args.k, args.seed)
        scores[name] = {"log_px": log_px, "elbo": elbo}
        print(f"   {name}: log p(x) {log_px.mean():.2f}, ELBO {elbo.mean():.2f} "
              f"({time.perf_counter() - started:.0f} s to evaluate)", flush=True)  # fmt: skip
    rows = [{**summary(name, s, scores[base]["log_px"]), **budgets[name]}
            for name, s in scores.items()]  # fmt: skip
    settings = {key: str(value) for key, value in vars(args).items()}
    (args.out / "results.json").write_text(json.dumps({"settings": settings, "rows": rows},
                                                      indent=2))  # fmt: skip
    text = table(rows, args, test.shape[0], base)
    (args.out / "results.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
