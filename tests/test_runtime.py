"""Tests of :mod:`pyrovae.runtime`: blocks that change how code runs (eval mode, thread
count, random streams) and put the caller's state back afterwards."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn

from pyrovae.runtime import eval_mode, forked_rng, frozen, isolated_rng, threads


def _draws() -> tuple[torch.Tensor, np.ndarray, float]:
    return torch.rand(3), np.random.random_sample(3), random.random()


def _assert_same(a: tuple, b: tuple) -> None:
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


def test_forked_rng_restores_every_stream_and_rewinds():
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    with forked_rng("cpu") as rewind:
        first = _draws()
        rewind()
        _assert_same(first, _draws())  # the same random numbers twice
        np.random.seed(7)  # as ArviZ's random_seed does
    assert torch.equal(before[0], torch.get_rng_state())
    assert np.array_equal(before[1], np.random.get_state()[1])
    assert before[2] == random.getstate()
    _assert_same(first, _draws())  # the caller draws what it would have drawn


def test_forked_rng_restores_after_an_error():
    state = torch.get_rng_state()
    with pytest.raises(ValueError), forked_rng():
        torch.rand(5)
        raise ValueError
    assert torch.equal(state, torch.get_rng_state())


def test_isolated_rng_is_seeded_and_leaves_the_caller_alone():
    state = torch.get_rng_state()
    with isolated_rng("cpu", 3):
        first = _draws()
    with isolated_rng("cpu", 3):
        _assert_same(first, _draws())
    assert torch.equal(state, torch.get_rng_state())
    with isolated_rng("cpu", None):  # unseeded: the caller's own stream, not forked
        torch.rand(1)
    assert not torch.equal(state, torch.get_rng_state())


def test_threads_are_the_callers_again_after_the_block():
    before = torch.get_num_threads()
    with threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), threads(1):
        raise RuntimeError
    assert torch.get_num_threads() == before
    with threads(None):
        assert torch.get_num_threads() == before


def test_eval_mode_and_frozen_restore_the_module():
    module = nn.Sequential(nn.Linear(2, 2), nn.Dropout())
    module.train()
    module[0].bias.requires_grad_(False)
    with pytest.raises(KeyError), frozen(module):
        assert not module.training
        assert not any(p.requires_grad for p in module.parameters())
        raise KeyError
    assert module.training
    assert [p.requires_grad for p in module.parameters()] == [True, False]
    module.eval()
    with eval_mode(module):
        assert not module.training
    assert not module.training
