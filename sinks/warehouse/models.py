"""The warehouse star schema of CONTRACT.md (SQLAlchemy 2 Core tables; Alembic migrations are generated from these).

Facts are immutable and one row per ``event_id``; ``participant_key`` is the keyed HMAC of the NIK (there is no NIK
column anywhere). Every fact records where it came from (topic, partition, offset) so an analyst can trace a row
back to the record and the sink can prove it neither skipped nor doubled anything.
"""
from __future__ import annotations

from sqlalchemy import (BigInteger, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table,
                        Text)

from streams.demography import MIN_CELL

metadata = MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s", "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s", "pk": "pk_%(table_name)s",
})

dim_region = Table(
    "dim_region", metadata,
    Column("region_code", String(5), primary_key=True),
    Column("name", String(60), nullable=False),
    Column("kind", String(10), nullable=False),  # regency | city
    Column("population", Integer),
)

dim_program = Table(
    "dim_program", metadata,
    Column("program", String(4), primary_key=True),
    Column("name", String(60), nullable=False),
)


def _source_columns() -> list[Column]:
    return [Column("src_topic", String(249), nullable=False), Column("src_partition", Integer, nullable=False),
            Column("src_offset", BigInteger, nullable=False),
            Column("loaded_at", DateTime(timezone=True), nullable=False)]


def _fact(name: str, *columns: Column) -> Table:
    table = Table(
        name, metadata,
        Column("event_id", String(36), primary_key=True),
        Column("participant_key", String(64), nullable=False),
        Column("region_code", String(5), ForeignKey("dim_region.region_code"), nullable=False),
        Column("occurred_at", DateTime(timezone=True), nullable=False),
        Column("event_month", String(7), nullable=False),  # YYYY-MM of occurred_at (portable GROUP BY)
        *columns,
        *_source_columns(),
    )
    Index(f"ix_{name}_region_month", table.c.region_code, table.c.event_month)
    Index(f"ix_{name}_participant", table.c.participant_key)
    return table


fact_registration = _fact(
    "fact_registration",
    Column("segment", String(8), nullable=False),
    Column("cohort", String(20), nullable=False),
    Column("occupation", String(200)),  # free text, NULL since 0002 (may hold anything: occupation_code instead)
    Column("funding_source", String(16), nullable=False),
    Column("programs", String(40), nullable=False),  # e.g. "JKK,JKM"
    # read from the NIK before it is pseudonymised (streams/demography.py); NULL in rows loaded before 0002
    Column("district", String(8)),  # e.g. "64.72.05", or "unknown"
    Column("age_band", String(8)),  # at registration: <25, 25-34, 35-44, 45-54, 55+, unknown
    Column("sex", String(8)),  # female | male | unknown
    Column("occupation_code", String(24)),  # streams/occupation.py; NULL in rows loaded before 0002
)

fact_contribution = _fact(
    "fact_contribution",
    Column("period", String(7), nullable=False),
    Column("amount_idr", BigInteger, nullable=False),
    Column("funding_source", String(16), nullable=False),
)

fact_claim = _fact(
    "fact_claim",
    Column("program", String(4), ForeignKey("dim_program.program"), nullable=False),
    Column("amount_idr", BigInteger, nullable=False),
    Column("status", String(10), nullable=False),
)

region_snapshot = Table(
    "region_snapshot", metadata,
    Column("region_code", String(5), ForeignKey("dim_region.region_code"), primary_key=True),
    Column("as_of", DateTime(timezone=True), primary_key=True),  # the stream's event-time clock
    Column("registered", Integer, nullable=False),
    Column("active", Integer, nullable=False),
    Column("lapsed", Integer, nullable=False),
    Column("coverage_ratio", Float),
    Column("quota_total", Integer, nullable=False),
    Column("quota_used", Integer, nullable=False),
    Column("taken_at", DateTime(timezone=True), nullable=False),  # wall clock of the snapshot
)

region_alert = Table(
    "region_alert", metadata,
    Column("alert_id", String(64), primary_key=True),  # per-funder rules name the funder
    Column("region_code", String(5), ForeignKey("dim_region.region_code"), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("status", String(10), nullable=False),  # firing | resolved
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("resolved_at", DateTime(timezone=True)),
    Column("details", Text, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_region_alert_region_status", "region_code", "status"),
)

FACT_TABLES = {"Registration": fact_registration, "Contribution": fact_contribution, "Claim": fact_claim}

# How each table is upserted (sinks.warehouse.db.upsert): facts never change; a snapshot is replaced; an alert
# takes its newest transition, even when an older one is delivered again.
UPSERT = {**{t: {"update": False} for t in FACT_TABLES.values()}, region_snapshot: {"update": True},
          region_alert: {"update": True, "newer": "updated_at"}}

PROGRAM_NAMES = {
    "JKK": "Jaminan Kecelakaan Kerja (work accident)",
    "JKM": "Jaminan Kematian (death)",
    "JHT": "Jaminan Hari Tua (old-age savings)",
    "JP": "Jaminan Pensiun (pension)",
    "JKP": "Jaminan Kehilangan Pekerjaan (job loss)",
}


# Views for analysts: people registered per region, cohort and one attribute, with cells under MIN_CELL people
# NULL, and when that hides exactly one cell of a region and cohort, the next smallest too (docs/domain.md "Breakdowns
# and small cells"; the same rule as streams/demography.py ``suppressed``). Plain SQL that SQLite and PostgreSQL share.
BREAKDOWN_VIEWS = {"registered_by_district": "district", "registered_by_age_band": "age_band",
                   "registered_by_sex": "sex", "registered_by_occupation": "occupation_code"}


def breakdown_view_sql(column: str) -> str:
    small = f"CASE WHEN people < {MIN_CELL} THEN 1 ELSE 0 END"
    return f"""
WITH cells AS (
    SELECT region_code, cohort, {column}, count(DISTINCT participant_key) AS people
    FROM fact_registration WHERE {column} IS NOT NULL
    GROUP BY region_code, cohort, {column}),
ranked AS (
    SELECT region_code, cohort, {column}, people, {small} AS small,
           sum({small}) OVER (PARTITION BY region_code, cohort) AS small_cells,
           count(*) OVER (PARTITION BY region_code, cohort) AS all_cells,
           row_number() OVER (PARTITION BY region_code, cohort, {small} ORDER BY people, {column}) AS size_rank
    FROM cells)
SELECT region_code, cohort, {column},
       CASE WHEN small = 1 OR (small_cells = 1 AND all_cells > 1 AND size_rank = 1) THEN NULL ELSE people END
           AS people
FROM ranked"""
