"""The warehouse sink's commands, `jamsostek sink` and `jamsostek migrate`: a plugin of the `jamsostek` CLI
(entry-point group ``jamsostek.commands`` in pyproject.toml), so that streams/ never imports sinks/."""
from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Optional

import typer

from streams import privacy
from streams.commands import ConfigOpt, LogLevel, LogLevelOpt, console, fail, safe_url, settings_from

commands = typer.Typer()


@commands.command(context_settings={"ignore_unknown_options": True})  # `migrate -1` is a revision, not an option
def migrate(config: Optional[Path] = ConfigOpt,
            revision: str = typer.Argument("head", help="target revision: head (default), or base / -1 to go down "
                                                          "(drops tables: asks first)"),
            yes: bool = typer.Option(False, "--yes", "-y", help="do not ask before a downgrade")) -> None:
    """Create or upgrade the warehouse schema (Alembic) at WAREHOUSE_URL and load the dimension tables."""
    from sinks.warehouse import db
    s = settings_from(config)
    url = s.warehouse_url
    down = revision == "base" or revision.startswith("-")
    if down and not yes:
        if not sys.stdin.isatty():
            console.print(f"[red]error:[/] `migrate {revision}` drops warehouse tables at {safe_url(url)}; "
                          "pass --yes to confirm")
            raise typer.Exit(2)
        typer.confirm(f"Downgrade the warehouse at {safe_url(url)} to {revision}? This drops tables and their rows",
                      abort=True)
    try:
        if down:
            db.downgrade(url, revision)
        else:
            db.migrate(url, revision)
    except Exception as exc:  # unreachable database, bad URL: one readable line
        fail(exc)
    console.print(f"[green]✓[/] warehouse at {safe_url(url)} is at revision {revision}")


@commands.command()
def sink(config: Optional[Path] = ConfigOpt,
         loglevel: LogLevel = LogLevelOpt) -> None:
    """Run the warehouse sink: migrate, then write facts and region snapshots, committing offsets after each batch."""
    import asyncio
    import logging
    from sinks.warehouse import db
    from sinks.warehouse.sink import WarehouseSink
    s = settings_from(config)
    privacy.install_log_scrubber()
    logging.basicConfig(level=loglevel.value.upper(), format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # one line per registry lookup is noise
    try:
        s.pseudonym_key_bytes()  # production without a key: refuse before touching anything
        db.migrate(s.warehouse_url)
        warehouse = WarehouseSink(s)
    except Exception as exc:
        fail(exc)

    async def main() -> None:
        task, loop = asyncio.current_task(), asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop between batches' awaits; uncommitted work is re-read
            loop.add_signal_handler(sig, task.cancel)
        try:
            await warehouse.run()
        except asyncio.CancelledError:
            console.print("warehouse sink stopped")
    asyncio.run(main())


def register(app: typer.Typer) -> None:
    """The entry point: adds this module's commands to the `jamsostek` app."""
    app.registered_commands += commands.registered_commands
