"""Pieces of the self-contained HTML reports: tables, embedded figures, the page."""

from __future__ import annotations

import base64
import html
import io
from typing import Any


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
