"""``evaluate``'s choice of metrics and memory budget: only what is asked for is computed,
and bad names or sizes are one-line errors (pyrovae/reports/evaluate.py, the CLI)."""

from __future__ import annotations

import pytest
import torch

from pyrovae.errors import ConfigError
from pyrovae.inference.importance import draw_flops
from pyrovae.reports import evaluate as evaluate_module
from pyrovae.reports.evaluate import (
    DEFAULT_K,
    METRIC_STEPS,
    METRICS,
    MIN_AUTO_K,
    default_k,
    evaluate,
)


def _images(n: int = 12) -> torch.Tensor:
    return torch.bernoulli(torch.full((n, 1, 4, 4), 0.3))


def _refuse(what: str):
    def refuse(*args, **kwargs):
        raise AssertionError(f"{what} ran, but its metric was not asked for")

    return refuse


def test_every_metric_has_a_step():
    assert tuple(METRIC_STEPS) == METRICS


@pytest.mark.parametrize("asked", [["active"], ["elbo"], ["logpx"], ["surgery", "active"]])
def test_only_the_asked_metrics_are_computed(make_vae, monkeypatch, asked):
    steps = {
        "logpx": ("importance_all", "log_px"),
        "active": ("unit_variances", "active_units"),
        "surgery": ("elbo_surgery", "surgery"),
        "gaps": ("inference_gaps", "gaps"),
    }
    for metric, (function, _) in steps.items():
        if metric not in asked:
            monkeypatch.setattr(evaluate_module, function, _refuse(function))
    result = evaluate(make_vae(), _images(), k=4, metrics=",".join(asked))
    assert result.metrics == [name for name in METRICS if name in asked]
    for metric, (_, figure) in steps.items():
        assert (getattr(result, figure) is not None) == (metric in asked), metric
    assert (result.elbo is not None) == ("elbo" in asked)
    assert set(result.to_dict()["metrics"]) == set(asked)


def test_an_unknown_metric_is_one_line_listing_the_valid_ones(make_vae):
    with pytest.raises(ConfigError) as error:
        evaluate(make_vae(), _images(), metrics="logpx,likelihood")
    message = str(error.value)
    assert "\n" not in message and "likelihood" in message
    assert all(name in message for name in METRICS)


def test_a_memory_budget_sets_the_chunks_and_not_the_figures(make_vae):
    vae = make_vae()
    figures = []
    for budget in ("1M", 2**24, None):
        torch.manual_seed(0)
        result = evaluate(vae, _images(), k=64, metrics="logpx", memory_budget=budget)
        figures.append((result.log_px, result.log_px_mc_stderr))
    # Tiny images: every budget holds all 64 draws at once, so the draws are the same.
    assert figures[0] == figures[1] == figures[2]
    with pytest.raises(ConfigError, match="--memory-budget"):
        evaluate(vae, _images(), k=4, memory_budget="a lot")


def test_default_k_is_sized_to_the_cost_of_a_draw(make_vae, monkeypatch):
    vae = make_vae()
    flops = draw_flops(vae)
    assert flops > 0
    assert default_k(vae, 12) == DEFAULT_K  # a small MLP: far inside the budget
    assert default_k(vae, 12, budget=12 * 37 * flops) == 37
    assert default_k(vae, 12, budget=1.0) == MIN_AUTO_K
    # A costlier density (a VampPrior with a flow guide) costs more per draw.
    assert draw_flops(make_vae(guide="iaf", prior="vamp")) > 10 * flops
    monkeypatch.setattr(evaluate_module, "EVALUATION_FLOPS", 12 * 20 * flops)
    result = evaluate(vae, _images(), metrics="logpx")
    assert result.k == 20 and "K = 20 draws per image" in " ".join(result.warnings)
    assert evaluate(vae, _images(), k=30, metrics="logpx").k == 30
