"""Database access for the warehouse: engines, Alembic migrations, dimension sync and the one upsert helper.

Upserts follow Kafka Connect JDBC's ``insert.mode=upsert`` with ``pk.mode=record_value``: facts are keyed on
``event_id`` and never change (``ON CONFLICT DO NOTHING``: a re-delivered record is a no-op); snapshots and alerts
are keyed on their natural key and take the newest values (``ON CONFLICT DO UPDATE``). PostgreSQL and SQLite share
the same ``INSERT ... ON CONFLICT`` syntax, so one statement builder serves both dialects. On PostgreSQL a large
batch is first ``COPY``-ed into a transaction-scoped temporary table and upserted from there in one statement
(the staging-table pattern of bulk loaders): a multi-row ``INSERT`` costs several times a ``COPY`` of the rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Table, column, create_engine, event, select, table as table_clause, text
from sqlalchemy.dialects import postgresql, sqlite

from sinks.warehouse.models import PROGRAM_NAMES, dim_program, dim_region
from streams.reference import regions

MIGRATIONS = Path(__file__).with_name("migrations")


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # readers (analysts, the web) don't block the writer
            cursor = dbapi_conn.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()
        return engine
    return create_engine(url, pool_pre_ping=True)


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    """Bring the schema to ``revision`` and load the dimension tables from the reference data."""
    command.upgrade(alembic_config(url), revision)
    if revision == "head":
        engine = make_engine(url)
        with engine.begin() as conn:
            sync_dimensions(conn)
        engine.dispose()


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


def sync_dimensions(conn: Connection) -> None:
    upsert(conn, dim_region, [{"region_code": r.code, "name": r.name, "kind": r.kind, "population": r.population}
                              for r in regions().values()], update=True)
    upsert(conn, dim_program, [{"program": p, "name": n} for p, n in PROGRAM_NAMES.items()], update=True)


COPY_MIN_ROWS = 50  # below this a plain multi-row INSERT is as quick as staging


def copy_rows(conn: Connection, table: str, columns: Sequence[str], rows: Iterable[dict]) -> None:
    """PostgreSQL ``COPY table (columns) FROM STDIN`` of ``rows`` (psycopg's binary-safe row writer)."""
    cursor = conn.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([row.get(c) for c in columns])


def upsert(conn: Connection, table: Table, rows: Sequence[dict], *, update: bool, newer: str | None = None) -> None:
    """Insert ``rows``; on a primary-key conflict keep the old row, or take the new values (only where the new
    ``newer`` column is not older than the stored one, when given)."""
    if not rows:
        return
    keys = [c.name for c in table.primary_key.columns]
    # one statement may not touch a row twice (PostgreSQL refuses): per key keep the first (facts) or last row
    unique: dict[tuple, dict] = {}
    for row in rows:
        pk = tuple(row[k] for k in keys)
        if pk not in unique or (update and (newer is None or row[newer] >= unique[pk][newer])):
            unique[pk] = row
    rows = list(unique.values())
    columns = list(rows[0])
    on_postgres = conn.dialect.name == "postgresql"
    staged = on_postgres and len(rows) >= COPY_MIN_ROWS
    insert = (postgresql.insert if on_postgres else sqlite.insert)(table)
    if staged:
        stage = f"stage_{table.name}"
        conn.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table.name}) ON COMMIT DELETE ROWS"))
        copy_rows(conn, stage, columns, rows)
        insert = insert.from_select(columns, select(*(column(c) for c in columns)).select_from(table_clause(stage)))
    if update:
        stmt = insert.on_conflict_do_update(
            index_elements=keys, set_={c: insert.excluded[c] for c in columns if c not in keys},
            where=None if newer is None else table.c[newer] <= insert.excluded[newer])
    else:
        stmt = insert.on_conflict_do_nothing(index_elements=keys)
    if staged:
        conn.execute(stmt)
    else:
        conn.execute(stmt, rows)


def count(conn: Connection, tables: Iterable[Table]) -> dict[str, int]:
    from sqlalchemy import func
    return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}
