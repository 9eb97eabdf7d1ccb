"""The `jewelcut` command. Each area registers its own commands; heavy imports (torch) happen
inside the commands, so the producer's commands run on a machine without torch.

A service that is down or misconfigured (database, broker, S3, an invalid setting) ends any
command with one line saying what failed, the setting and the address (jewelcut.services) and a
non-zero exit code; the traceback is shown only with `--debug` or JEWELCUT_LOG_LEVEL=DEBUG.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

SERVICE_FAILED = 1  # a service is down or its schema is behind
INVALID_SETTING = 2  # like a usage error: the configuration has to change


class JewelcutGroup(TyperGroup):
    """The root command: service failures become the operator's one line."""

    def invoke(self, ctx: click.Context) -> Any:
        from pydantic import ValidationError

        from jewelcut.services import explain

        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except Exception as error:
            settings = _settings_or_none()
            line = explain(error, settings)
            if line is None:
                raise
            if _debug(ctx, settings):
                Console(stderr=True).print_exception(show_locals=False)
            typer.echo(f"error: {line}", err=True)
            code = INVALID_SETTING if isinstance(error, ValidationError) else SERVICE_FAILED
            raise typer.Exit(code) from error


def _settings_or_none() -> Any:
    from pydantic import ValidationError

    from jewelcut.settings import get_settings

    try:
        return get_settings()
    except ValidationError:
        return None


def _debug(ctx: click.Context, settings: Any) -> bool:
    """--debug, or a DEBUG log level (from the settings, or the environment when they are
    invalid)."""
    level = settings.log_level if settings else os.environ.get("JEWELCUT_LOG_LEVEL", "")
    return bool(ctx.params.get("debug")) or level.upper() == "DEBUG"


app = typer.Typer(
    name="jewelcut",
    help="Background removal for jewellery listing photos.",
    cls=JewelcutGroup,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="Show the traceback when a service fails.")
    ] = False,
) -> None:
    """Background removal for jewellery listing photos."""


def _register_all() -> None:
    from jewelcut import commands as core_commands
    from producer import commands as producer_commands
    from review import commands as review_commands
    from training import commands as training_commands
    from worker import commands as worker_commands

    for module in (
        core_commands,
        worker_commands,
        producer_commands,
        review_commands,
        training_commands,
    ):
        module.register(app)


_register_all()
