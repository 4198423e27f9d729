"""Pieces of the self-contained HTML reports: tables, embedded figures and images, and
pages rendered from the Jinja2 templates in ``pyrovae/reports/templates/``."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np


def new_figure(**options: Any) -> Any:
    """A matplotlib ``Figure`` of its own, outside pyplot: drawing a report neither
    selects nor changes the caller's backend, and nothing is left open.
    ``options`` go to ``Figure`` (``figsize=(6, 4)``)."""
    from matplotlib.figure import Figure

    return Figure(**options)


def figure_png(fig: Any) -> str:
    """``fig`` as a base64 PNG for an ``<img src="data:...">``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(value: Any) -> str:
        return f"{value:.3f}" if isinstance(value, float) else html.escape(str(value))

    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{cell(row[c])}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def html_page(title: str, sections: list[tuple[str, str]]) -> str:
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;"
        "text-align:right}img{max-width:100%}"
    )
    parts = [f"<h2>{html.escape(name)}</h2>\n{content}" for name, content in sections]
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(parts)
        + "</body></html>\n"
    )


def embedded_image(png: str) -> str:
    return f"<img src='data:image/png;base64,{png}'>"


def image_png(pixels: np.ndarray, size: int = 84) -> str:
    """An image ``(C, H, W)`` on [0, 1] (grey for one channel, RGB for three) as a
    base64 PNG whose longer side is about ``size`` pixels, upscaled without blurring
    (nearest neighbour) so that an 8 x 8 digit stays readable."""
    from PIL import Image

    # A missing value (NaN, in incomplete data) is drawn black.
    array = np.clip(np.nan_to_num(np.asarray(pixels, dtype=float), nan=0.0), 0.0, 1.0)
    array = (array * 255).round().astype(np.uint8)
    image = Image.fromarray(array[0] if array.shape[0] == 1 else np.moveaxis(array[:3], 0, -1))
    scale = max(1, round(size / max(image.size)))
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def render(template: str, **context: Any) -> str:
    """The template ``template`` of ``pyrovae/reports/templates/`` rendered with
    ``context``; every value is HTML-escaped unless marked safe."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    environment = Environment(
        loader=PackageLoader("pyrovae.reports", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a misspelt name fails the test, not the reader
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["number"] = _number
    return environment.get_template(template).render(**context)


def _number(value: Any, digits: int = 3) -> str:
    """Floats to ``digits`` decimals, None and NaN as a dash, anything else as text."""
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
