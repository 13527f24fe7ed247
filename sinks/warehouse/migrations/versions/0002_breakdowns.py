"""registrations: district, age band and sex from the NIK; views of them with small cells hidden; alert ids of
per-funder rules are longer; occupations as codes, the free text no longer kept

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 04:30:00
"""
from alembic import op
import sqlalchemy as sa

from sinks.warehouse.models import BREAKDOWN_VIEWS, breakdown_view_sql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('fact_registration', schema=None) as batch_op:
        batch_op.add_column(sa.Column('district', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('age_band', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('sex', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('occupation_code', sa.String(length=24), nullable=True))
        batch_op.alter_column('occupation', existing_type=sa.String(length=200), nullable=True)
    for view, column in BREAKDOWN_VIEWS.items():
        op.execute(f"CREATE VIEW {view} AS {breakdown_view_sql(column)}")
    with op.batch_alter_table('region_alert', schema=None) as batch_op:  # "...:contributions_stopped.apbd_province:..."
        batch_op.alter_column('alert_id', existing_type=sa.String(length=40), type_=sa.String(length=64))


def downgrade() -> None:
    # region_alert.alert_id stays 64 wide: narrowing would fail on the longer ids already written
    for view in BREAKDOWN_VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {view}")
    with op.batch_alter_table('fact_registration', schema=None) as batch_op:
        batch_op.drop_column('occupation_code')  # occupation stays nullable: rows since 0002 have no free text
        batch_op.drop_column('sex')
        batch_op.drop_column('age_band')
        batch_op.drop_column('district')
