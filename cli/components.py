"""``pyrovae components``: what can be chosen, with every option, from the declarations."""

from __future__ import annotations

import click

from pyrovae.cli._common import user_errors, verbosity_options


@click.command("components")
@click.option("--markdown", is_flag=True, help="Print Markdown (docs/components.md is this).")
@click.option("--builtin", is_flag=True, help="Only pyrovae's own components, leaving plugins out.")
@verbosity_options
@user_errors
def components_command(markdown: bool, builtin: bool) -> None:
    """List the installed networks, likelihoods, guides and priors (plugins included).

    docs/components.md is ``pyrovae components --markdown --builtin``.
    """
    from pyrovae.model.catalog import catalog_markdown, catalog_text

    only = "pyrovae" if builtin else None
    click.echo(catalog_markdown(only) if markdown else catalog_text(only), nl=False)
