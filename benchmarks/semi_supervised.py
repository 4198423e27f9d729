"""Semi-supervised classification on Fashion-MNIST: M2 against logistic regression.

For each number of labels (default 100 and 1000) the labels of that many
class-balanced training images are kept (seeded,
:func:`pyrovae.data.labels.keep_balanced`) and the rest set to -1; then

- M2 (``--model m2``) trains on all the training images, labelled and not;
- scikit-learn's logistic regression trains on the labelled images alone
  (pixel intensities), and, with ``--unsupervised``, on the posterior means
  E_q[z|x] of those images under a VAE trained on all the training images
  without labels (the features an unsupervised run gives a linear classifier).

Each is scored on the test images (intensities in [0, 1]; M2 classifies with
q(y|x)), with the binomial standard error sqrt(p (1 - p) / n). The training
images can be cut to the first ``--train-size`` (the budget), the labelled ones
being chosen among those; the test set is the full one.

Run from the repository root (one thread, in the background)::

    nice -n 10 python benchmarks/semi_supervised.py --epochs 3 --train-size 10000 \\
        --unsupervised --json semi_supervised.json
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

DATA_DIR = "/usr/share/datasets/fashion-mnist"


def binomial(correct: np.ndarray) -> dict[str, float]:
    p = float(correct.mean())
    return {"accuracy": p, "stderr": math.sqrt(p * (1 - p) / correct.size), "n": int(correct.size)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-size", type=int, default=None, help="first N training images")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--latent-dim", type=int, default=16)
    parser.add_argument("--aux-weight", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--data-dir", default=DATA_DIR)
    parser.add_argument("--unsupervised", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import pyrovae
    from pyrovae.data.labels import keep_balanced
    from pyrovae.data.load import load_dataset
    from pyrovae.data.pixels import to_unit_float

    data = load_dataset("fashion-mnist", args.data_dir, seed=args.seed, test_fraction=0.1)
    assert isinstance(data.train, torch.Tensor) and data.train_labels is not None
    train, train_y = data.train[: args.train_size], data.train_labels[: args.train_size]
    test_x = to_unit_float(data.test).numpy()
    test_y = data.test_labels.numpy() if data.test_labels is not None else None
    assert test_y is not None
    flat = to_unit_float(train).flatten(1).numpy()
    budget = {
        **{k: getattr(args, k) for k in ("epochs", "hidden", "latent_dim", "aux_weight")},
        **{"n_train": int(train.shape[0]), "n_test": int(test_y.size), "threads": args.threads},
    }
    rows: list[dict[str, Any]] = []
    work = Path(tempfile.mkdtemp(prefix="pyrovae-ssl-"))
    common = {"hidden": (args.hidden,), "latent_dim": args.latent_dim, "epochs": args.epochs,
              "seed": args.seed, "progress": False, "device": "cpu"}  # fmt: skip
    features = None
    if args.unsupervised:
        started = time.perf_counter()
        path = work / "all.npz"
        np.savez(path, x_train=train.numpy(), y_train=train_y.numpy(),
                 x_test=data.test.numpy(), y_test=test_y)  # fmt: skip
        vae = pyrovae.train(dataset=str(path), out=work / "vae", **common).vae.eval()
        with torch.no_grad():
            features = {
                "train": vae.qz(to_unit_float(train)).mean.numpy(),
                "test": vae.qz(to_unit_float(data.test)).mean.numpy(),
            }
        print(f"unsupervised VAE: {time.perf_counter() - started:.0f} s", flush=True)
    for n_labels in args.labels:
        kept = keep_balanced(train_y, n_labels, args.seed).numpy()
        known = kept >= 0
        row: dict[str, Any] = {"labels": n_labels}
        row["logistic_pixels"] = logistic(flat[known], kept[known], test_x, test_y)
        if features is not None:
            row["logistic_vae_means"] = logistic(
                features["train"][known], kept[known], features["test"], test_y
            )
        started = time.perf_counter()
        path = work / f"m2-{n_labels}.npz"
        np.savez(path, x_train=train.numpy(), y_train=kept,
                 x_test=data.test.numpy(), y_test=test_y)  # fmt: skip
        result = pyrovae.train(dataset=str(path), out=work / f"m2-{n_labels}", kind="m2",
                               aux_weight=args.aux_weight, **common)  # fmt: skip
        predicted = pyrovae.classify(pyrovae.load_run(result.run_dir), test_x).numpy()
        row["m2"] = binomial(predicted == test_y)
        row["m2_seconds"] = time.perf_counter() - started
        row["m2_final"] = result.final
        rows.append(row)
        print(json.dumps(row), flush=True)
    report = {"budget": budget, "rows": rows}
    print(table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def logistic(x: np.ndarray, y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> dict:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(max_iter=2000).fit(x, y)
    return binomial(model.predict(test_x.reshape(test_x.shape[0], -1)) == test_y)


def table(rows: list[dict[str, Any]]) -> str:
    names = [("m2", "M2"), ("logistic_pixels", "logistic regression, pixels"),
             ("logistic_vae_means", "logistic regression, VAE posterior means")]  # fmt: skip
    lines = ["| labels | " + " | ".join(n for k, n in names if k in rows[0]) + " |"]
    lines.append("|---:|" + "---:|" * sum(k in rows[0] for k, _ in names))
    for row in rows:
        cells = [f"{row[k]['accuracy']:.3f} ± {row[k]['stderr']:.3f}" for k, _ in names if k in row]
        lines.append(f"| {row['labels']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
