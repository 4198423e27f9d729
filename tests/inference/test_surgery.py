"""Tests of pyrovae/inference/surgery.py beyond the figures (tests/reports/test_evaluate.py)."""

from __future__ import annotations

import torch

from pyrovae.inference.surgery import elbo_surgery


def test_surgery_runs_the_networks_in_eval_mode_and_leaves_the_mode_as_it_was(make_vae):
    # Sizing the surgery ran the encoder in training mode: a user's BatchNorm updated
    # its running statistics, so the model scored afterwards was not the one given.
    vae = make_vae()
    vae.train()
    modes = []
    vae.encoder.register_forward_pre_hook(lambda module, args: modes.append(module.training))
    elbo_surgery(vae, torch.rand(8, 1, 4, 4).bernoulli(), draws=16)
    assert modes and not any(modes)
    assert vae.training
