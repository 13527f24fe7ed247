"""What every `jamsostek` command shares: the console, the --config and --loglevel options, settings loading and
the one-line error. Owned by streams/ so that command plugins (sinks/cli.py, registered under the entry-point
group ``jamsostek.commands`` in pyproject.toml) use it without streams/ importing them."""
from __future__ import annotations

import enum
import os
from importlib.metadata import entry_points
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from streams.config import Settings

PLUGIN_GROUP = "jamsostek.commands"  # entry points: callables taking the Typer app and adding commands to it
console = Console(stderr=True, soft_wrap=True)  # an error stays one line, however narrow the terminal


class LogLevel(str, enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


LogLevelOpt = typer.Option(LogLevel.info, "--loglevel", case_sensitive=False, help="how much the process logs")
ConfigOpt = typer.Option(None, "--config", "-c", help="TOML file with settings (env vars still win)", exists=True)


def settings_from(config: Optional[Path]) -> Settings:
    if config is not None:
        os.environ["JAMSOSTEK_CONFIG"] = str(config)
    try:
        return Settings()
    except Exception as exc:  # pydantic ValidationError, missing file: say it plainly
        console.print(f"[red]configuration error:[/] {exc}")
        raise typer.Exit(2)


def fail(exc: Exception | str) -> None:
    console.print(f"[red]error:[/] {exc}")
    raise typer.Exit(1)


def safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url
    return make_url(url).render_as_string(hide_password=True)


def add_plugins(app: typer.Typer) -> list[str]:
    """Let every installed ``jamsostek.commands`` entry point add its commands to ``app``; returns their names."""
    found = sorted(entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)
    for ep in found:
        ep.load()(app)
    return [ep.name for ep in found]
