"""Bring your own encoder and decoder ``nn.Module``s.

The shape contract: the encoder maps a batch of data ``(batch, *data_shape)``
to features ``(batch, F)`` (any F; the guide turns them into q(z|x)'s
parameters); the decoder maps codes ``(batch, latent_dim)`` to the
likelihood's parameters ``(batch, *data_shape)`` (logits for Bernoulli).

The run records each module's import path and ``__init__`` arguments (kept as
attributes of the same names, as scikit-learn estimators do), so the run can
be loaded again, here and from the command line, wherever the module that
defines them (``examples/own_networks.py``) is importable:
``PYTHONPATH=examples pyrovae sample --run runs/own-networks``. Classes
defined in a script or notebook (``__main__``) load only in that session.

Run: python examples/custom_network.py [--epochs N]
"""

from __future__ import annotations

import argparse

from own_networks import SmallDecoder, SmallEncoder  # next to this script

import pyrovae


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", default="runs/own-networks")
    args = parser.parse_args()
    result = pyrovae.train(
        out=args.out,
        encoder=SmallEncoder(width=64),
        decoder=SmallDecoder(latent_dim=4, width=64),
        latent_dim=4,
        epochs=args.epochs,
    )
    print(f"test ELBO: {result.final['test_elbo']:.2f} nats per image")
    run = pyrovae.load_run(result.run_dir)  # the modules rebuilt from their record
    print("rebuilt:", run.config.model.options["network"]["encoder"]["class"])


if __name__ == "__main__":
    main()
