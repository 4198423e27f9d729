"""One look for every figure pyrovae draws: the matplotlib settings of plots and the
font and colours of the labels written beside image grids.

Plots are drawn on a matplotlib ``Figure`` of their own, outside pyplot, inside
:func:`styled_figure`, which applies :data:`STYLE` with
``matplotlib.rc_context`` only while the figure is drawn and saved: the
caller's rcParams and backend are left as they were. Grid labels take the
same font (matplotlib's own DejaVu Sans, found through its font manager), so a
run's plots and grids read alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar, cast

from pyrovae.files import atomic_write

#: Resolution of saved plots (dots per inch).
DPI = 100

#: Text and axis colour: near black.
TEXT_COLOR = "#222222"

#: Line colours in order (the colour-blind-safe "tableau" palette matplotlib defaults to).
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")

#: The font of every figure; matplotlib ships it, so it is on every machine.
FONT = "DejaVu Sans"

#: Size in points of axis labels and legends (pixels, for grid labels).
FONT_SIZE = 11

#: matplotlib settings of every plot pyrovae draws.
STYLE: dict[str, Any] = {
    "font.family": FONT,
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE + 1,
    "axes.labelsize": FONT_SIZE,
    "legend.fontsize": FONT_SIZE - 1,
    "legend.frameon": False,
    "text.color": TEXT_COLOR,
    "axes.labelcolor": TEXT_COLOR,
    "axes.edgecolor": TEXT_COLOR,
    "xtick.color": TEXT_COLOR,
    "ytick.color": TEXT_COLOR,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "lines.linewidth": 1.6,
    "lines.markersize": 4,
    "image.cmap": "viridis",
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "savefig.dpi": DPI,
    "savefig.bbox": "tight",
}


F = TypeVar("F", bound=Callable[..., Any])


def in_style(function: F) -> F:
    """Run ``function``, which makes and saves its own figures, with :data:`STYLE`
    applied (for code that draws several figures, or returns them as PNG data)."""

    @functools.wraps(function)
    def styled(*args: Any, **kwargs: Any) -> Any:
        import matplotlib

        with matplotlib.rc_context(cast(Any, STYLE)):
            return function(*args, **kwargs)

    return cast(F, styled)


@contextmanager
def styled_figure(**options: Any) -> Iterator[Any]:
    """A matplotlib ``Figure`` drawn (and to be saved) in :data:`STYLE`.

    ``options`` go to ``Figure`` (``figsize=(6, 4)``). Draw and save inside
    the ``with`` block: matplotlib reads its settings as artists are made and
    saved.

    Example
    -------
    >>> with styled_figure(figsize=(6, 4)) as fig:  # doctest: +SKIP
    ...     ax = fig.subplots()
    ...     ax.plot([1, 2, 3])
    ...     save_figure(fig, "curve.png")
    """
    import matplotlib
    from matplotlib.figure import Figure

    with matplotlib.rc_context(cast(Any, STYLE)):  # its stubs list every key as a Literal
        yield Figure(**options)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG at ``path`` through :func:`pyrovae.files.atomic_write`."""
    atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=DPI))
    return Path(path)


def label_font(size: int = FONT_SIZE + 4) -> Any:
    """The PIL font of grid labels: :data:`FONT` at ``size`` pixels."""
    from matplotlib import font_manager
    from PIL import ImageFont

    return ImageFont.truetype(font_manager.findfont(FONT), size)
