"""The `jewelcut` command. Each area registers its own commands; heavy imports (torch) happen
inside the commands, so the producer's commands run on a machine without torch."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="jewelcut",
    help="Background removal for jewellery listing photos.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)


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
