"""The ``pyrovae`` command line: thin click commands over the library.

Each command parses options, builds a config and calls one library function;
heavy imports (torch, Pyro, ArviZ) happen inside the command, so that
``pyrovae --help`` is instant. Installed as ``pyrovae.cli``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from pyrovae import __version__
from pyrovae.cli._pipes import tolerating_closed_stdout
from pyrovae.cli.classify import classify_command
from pyrovae.cli.components import components_command
from pyrovae.cli.evaluate import diagnose_command, evaluate_command
from pyrovae.cli.generate import reconstruct_command, sample_command
from pyrovae.cli.impute import impute_command
from pyrovae.cli.latent import encode_command, explore_command, probe_command
from pyrovae.cli.train import train_command


@contextmanager
def _one_line_usage_errors() -> Iterator[None]:
    """A usage error (an unknown option, a value out of range) as one line,
    ``Error: ... (see 'pyrovae train --help')``, with click's exit status 2; click
    would print the usage and a hint first, three lines for one mistake."""
    try:
        yield
    except click.exceptions.NoArgsIsHelpError:  # ``pyrovae`` alone: the help, as it is
        raise
    except click.UsageError as err:
        if err.ctx is None:
            raise
        message = f"{err.format_message()} (see '{err.ctx.command_path} --help')"
        raise click.UsageError(message) from None


class _Commands(click.Group):
    """pyrovae's command group: usage errors of it and of its commands are one line."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        with _one_line_usage_errors():
            return super().make_context(*args, **kwargs)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        ctx.meta["pyrovae.command"] = name
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        def note() -> str | None:
            if ctx.meta.get("pyrovae.command") != "train":
                return None
            return (
                "standard output was closed; training goes on without printing "
                "(see the run's metrics.jsonl)"
            )

        with _one_line_usage_errors(), tolerating_closed_stdout(note):
            try:
                return super().invoke(ctx)
            except KeyboardInterrupt:  # click would print a bare "Aborted!"
                # pyrovae writes each file whole or not at all (train says what it kept).
                raise click.ClickException(
                    "interrupted (Ctrl-C); no file was left half-written"
                ) from None


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pyrovae")
def main() -> None:
    """pyrovae: variational autoencoders on Pyro.

    \b
    pyrovae train --likelihood bernoulli     train on the bundled digits
    pyrovae sample -n 64                      images from the latest run
    pyrovae reconstruct -n 16                 test images and reconstructions
    pyrovae evaluate -k 5000                  log p(x), ELBO, active units, gaps
    pyrovae diagnose -n 100                   PSIS, NUTS, PPC report (ArviZ)
    pyrovae impute --input x.npy --out f.npy  fill in missing values (NaN)
    pyrovae components                        what --network/--likelihood/--guide/--prior take
    pyrovae encode --out z.npz                posterior means and sds (features)
    pyrovae probe / explore                   linear probe; latent-space figures
    pyrovae classify --input x.npy --out y.npy  classes under an m2 (semi-supervised) run
    """


main.add_command(train_command)
main.add_command(sample_command)
main.add_command(reconstruct_command)
main.add_command(evaluate_command)
main.add_command(diagnose_command)
main.add_command(components_command)
main.add_command(encode_command)
main.add_command(probe_command)
main.add_command(explore_command)
main.add_command(impute_command)
main.add_command(classify_command)
