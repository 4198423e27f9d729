"""Chunking of importance sampling by a memory budget (pyrovae/inference/importance.py).

The estimators' agreement with probabilistic PCA's closed form is tested in
tests/reports/test_evaluate.py.
"""

from __future__ import annotations

import pytest
import torch
from pyro.distributions import is_validation_enabled

from pyrovae.errors import ConfigError
from pyrovae.inference import importance
from pyrovae.inference.importance import (
    CPU_BUDGET_CAP,
    auto_chunk_size,
    bytes_per_sample,
    default_memory_budget,
    importance_all,
    importance_batch,
    parse_memory_budget,
)


class _Replay:
    """A proposal that hands out, in order, draws of ``q`` made once: the same K
    draws however they are asked for, one chunk or many."""

    def __init__(self, q, bank: torch.Tensor) -> None:
        self.q, self.bank, self.used = q, bank, 0

    def sample(self, shape: torch.Size | tuple[int, ...] = ()) -> torch.Tensor:
        n = shape[0]
        self.used += n
        return self.bank[self.used - n : self.used]

    def log_prob(self, z: torch.Tensor) -> torch.Tensor:
        return self.q.log_prob(z)


def test_chunks_from_any_budget_give_the_unchunked_estimate(make_vae):
    vae = make_vae(hidden=16, latent_dim=2)
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.3))
    k = 60
    q = vae.qz(x)
    bank = q.sample((k,)).detach()  # (K, batch, L), one seed
    unchunked = importance_batch(vae, x, k, k, _Replay(q, bank))
    per_sample = bytes_per_sample(vae)
    chunks = []
    for samples in (4, 9, 30):
        budget = int(per_sample * x.shape[0] * samples)  # bytes for `samples` draws a chunk
        chunk = auto_chunk_size(vae, x.shape[0], budget)
        chunks.append(chunk)
        chunked = importance_batch(vae, x, k, chunk, _Replay(q, bank))
        for name in ("log_px", "elbo", "log_px_var", "elbo_var", "recon", "kl", "kl_var"):
            torch.testing.assert_close(getattr(chunked, name), getattr(unchunked, name))
    assert chunks == [4, 9, 30]


def test_bytes_per_sample_grow_with_the_data_the_latent_and_the_widths(make_vae):
    small = bytes_per_sample(make_vae(hidden=16, latent_dim=2))
    assert small > 4 * 16  # at least the decoded pixels in float32
    assert bytes_per_sample(make_vae(hidden=256, latent_dim=2)) > small + 4 * 240
    assert bytes_per_sample(make_vae(hidden=16, latent_dim=40)) > small + 4 * 38
    # A flow guide runs its networks on every draw: they count too.
    assert bytes_per_sample(make_vae(guide="iaf", hidden=16, latent_dim=2)) > small


def test_chunk_fits_the_budget_and_memory_does_not_depend_on_k(make_vae, monkeypatch):
    vae = make_vae(hidden=16, latent_dim=2)
    per_sample = bytes_per_sample(vae)
    budget = 2**20
    chunk = auto_chunk_size(vae, 10, budget)
    assert chunk * 10 * per_sample <= budget < (chunk + 1) * 10 * per_sample
    # Whatever K, the draws come in chunks of at most that size (the 2 blank images of
    # the probe of bytes_per_sample left out).
    seen = []
    terms = importance._chunk_terms

    def counted(v, x, r, n):
        if x.shape[0] == 10:
            seen.append(n)
        return terms(v, x, r, n)

    monkeypatch.setattr(importance, "_chunk_terms", counted)
    images = torch.bernoulli(torch.full((10, 1, 4, 4), 0.3))
    for k in (chunk // 2, 3 * chunk + 1):
        seen.clear()
        importance_all(vae, images, k, None, 10, False, memory_budget=budget)
        # With Pyro's validation on (as in the tests) the first chunk, checked, is one draw.
        first = 1 if is_validation_enabled() else 0
        assert seen[:first] == [1] * first
        assert max(seen[first:]) == min(k - first, chunk) and sum(seen) == k


def test_default_budget_is_a_share_of_free_memory_capped_on_the_cpu(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(importance, "available_memory", lambda device: 64 * 2**30)
    assert default_memory_budget(cpu) == CPU_BUDGET_CAP
    monkeypatch.setattr(importance, "available_memory", lambda device: 40 * 2**20)
    assert default_memory_budget(cpu) == 10 * 2**20
    monkeypatch.setattr(importance, "available_memory", lambda device: None)
    assert default_memory_budget(cpu) == CPU_BUDGET_CAP


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("64M", 64 * 2**20),
        ("64MB", 64 * 2**20),
        ("64mib", 64 * 2**20),
        ("1.5G", 3 * 2**29),
        (" 2048k ", 2 * 2**20),
        (2**21, 2**21),
        ("3000000", 3_000_000),
        ("auto", None),
        (None, None),
    ],
)
def test_memory_budget_parses_sizes(text, expected):
    assert parse_memory_budget(text) == expected


@pytest.mark.parametrize("text", ["lots", "64Q", "-5M", "1.2.3G", "100k", "0", True])
def test_memory_budget_rejects_what_is_no_size(text):
    with pytest.raises(ConfigError, match="--memory-budget") as error:
        parse_memory_budget(text)
    assert "\n" not in str(error.value)
