"""The per-epoch test ELBO (:func:`pyrovae.inference.objectives.evaluate_elbo`, the metrics row and
the epoch line): an average over enough draws of z that its Monte Carlo standard error
is below 0.02 nats, with that standard error."""

from __future__ import annotations

import json
import statistics

from pyrovae.api import train
from pyrovae.data.prepare import prepare_data
from pyrovae.inference.objectives import evaluate_elbo
from pyrovae.model.likelihoods.base import LIKELIHOODS


def test_test_elbo_is_averaged_to_its_target_and_its_stderr_is_honest(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    result = train(tiny_config, tmp_path / "run", progress=False, log=lambda _: None)
    device = next(result.vae.parameters()).device
    binary = LIKELIHOODS.get(tiny_config.model.likelihood).binary
    test = prepare_data(tiny_config, device, binary=binary).test
    values, stderrs = [], []
    for _ in range(6):
        figures = evaluate_elbo(result.vae, test)
        values.append(figures["elbo"])
        stderrs.append(figures["elbo_mc_stderr"])
        assert figures["elbo"] == figures["recon"] - figures["kl"]
    # One draw per image moved it by about 0.12 nats between evaluations.
    assert max(stderrs) < 0.02
    # The spread over 6 repeats against the reported error: the sample sd of 6 draws is
    # below 1.74 sigma with probability 0.99 (chi-square with 5 degrees of freedom).
    assert statistics.stdev(values) < 1.74 * max(stderrs)


def test_metrics_row_and_epoch_line_carry_the_stderr(tiny_config, tmp_path):
    tiny_config.train.epochs = 1
    lines: list[str] = []
    train(tiny_config, tmp_path / "run", progress=False, log=lines.append)
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert 0 < row["test_elbo_mc_stderr"] < 0.02 and row["test_elbo_draws"] >= 2
    epoch_line = next(line for line in lines if line.startswith("epoch"))
    assert f"± {row['test_elbo_mc_stderr']:.3f}" in epoch_line
