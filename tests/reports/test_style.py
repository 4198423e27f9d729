"""Every figure pyrovae draws takes one style, and drawing leaves the caller's matplotlib alone."""

from __future__ import annotations

import matplotlib

from pyrovae.reports.style import STYLE, in_style, styled_figure


def test_in_style_applies_the_style_only_while_the_function_runs() -> None:
    before = dict(matplotlib.rcParams)

    @in_style
    def draw() -> tuple[float, bool]:
        return matplotlib.rcParams["font.size"], matplotlib.rcParams["axes.spines.top"]

    assert draw() == (STYLE["font.size"], STYLE["axes.spines.top"])
    assert dict(matplotlib.rcParams) == before


def test_the_diagnose_probe_and_explore_figures_are_drawn_in_style() -> None:
    from pyrovae.reports import diagnostic_plots, explore, probe

    drawers = [
        diagnostic_plots.plot_khat,
        diagnostic_plots.plot_overlay,
        diagnostic_plots.plot_ppc,
        diagnostic_plots.plot_latent,
        probe.save_probe_plot,
        explore.write_latent_figures,
    ]
    assert all(getattr(f, "__wrapped__", None) is not None for f in drawers)


def test_styled_figure_draws_in_style_and_restores() -> None:
    before = matplotlib.rcParams["font.size"]
    with styled_figure(figsize=(2, 2)) as fig:
        assert matplotlib.rcParams["font.size"] == STYLE["font.size"]
        assert fig.get_size_inches().tolist() == [2, 2]
    assert matplotlib.rcParams["font.size"] == before
