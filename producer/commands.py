"""CLI commands of this area (registered on the root app by jewelcut.cli)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
