"""star schema of CONTRACT.md

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 21:11:40.801136
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('dim_program',
    sa.Column('program', sa.String(length=4), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.PrimaryKeyConstraint('program', name=op.f('pk_dim_program'))
    )
    op.create_table('dim_region',
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('name', sa.String(length=60), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('population', sa.Integer(), nullable=True),
    sa.PrimaryKeyConstraint('region_code', name=op.f('pk_dim_region'))
    )
    op.create_table('fact_claim',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('participant_key', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_month', sa.String(length=7), nullable=False),
    sa.Column('program', sa.String(length=4), nullable=False),
    sa.Column('amount_idr', sa.BigInteger(), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('src_topic', sa.String(length=249), nullable=False),
    sa.Column('src_partition', sa.Integer(), nullable=False),
    sa.Column('src_offset', sa.BigInteger(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['program'], ['dim_program.program'], name=op.f('fk_fact_claim_program')),
    sa.ForeignKeyConstraint(['region_code'], ['dim_region.region_code'], name=op.f('fk_fact_claim_region_code')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_fact_claim'))
    )
    with op.batch_alter_table('fact_claim', schema=None) as batch_op:
        batch_op.create_index('ix_fact_claim_participant', ['participant_key'], unique=False)
        batch_op.create_index('ix_fact_claim_region_month', ['region_code', 'event_month'], unique=False)

    op.create_table('fact_contribution',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('participant_key', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_month', sa.String(length=7), nullable=False),
    sa.Column('period', sa.String(length=7), nullable=False),
    sa.Column('amount_idr', sa.BigInteger(), nullable=False),
    sa.Column('funding_source', sa.String(length=16), nullable=False),
    sa.Column('src_topic', sa.String(length=249), nullable=False),
    sa.Column('src_partition', sa.Integer(), nullable=False),
    sa.Column('src_offset', sa.BigInteger(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['region_code'], ['dim_region.region_code'], name=op.f('fk_fact_contribution_region_code')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_fact_contribution'))
    )
    with op.batch_alter_table('fact_contribution', schema=None) as batch_op:
        batch_op.create_index('ix_fact_contribution_participant', ['participant_key'], unique=False)
        batch_op.create_index('ix_fact_contribution_region_month', ['region_code', 'event_month'], unique=False)

    op.create_table('fact_registration',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('participant_key', sa.String(length=64), nullable=False),
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_month', sa.String(length=7), nullable=False),
    sa.Column('segment', sa.String(length=8), nullable=False),
    sa.Column('cohort', sa.String(length=20), nullable=False),
    sa.Column('occupation', sa.String(length=200), nullable=False),
    sa.Column('funding_source', sa.String(length=16), nullable=False),
    sa.Column('programs', sa.String(length=40), nullable=False),
    sa.Column('src_topic', sa.String(length=249), nullable=False),
    sa.Column('src_partition', sa.Integer(), nullable=False),
    sa.Column('src_offset', sa.BigInteger(), nullable=False),
    sa.Column('loaded_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['region_code'], ['dim_region.region_code'], name=op.f('fk_fact_registration_region_code')),
    sa.PrimaryKeyConstraint('event_id', name=op.f('pk_fact_registration'))
    )
    with op.batch_alter_table('fact_registration', schema=None) as batch_op:
        batch_op.create_index('ix_fact_registration_participant', ['participant_key'], unique=False)
        batch_op.create_index('ix_fact_registration_region_month', ['region_code', 'event_month'], unique=False)

    op.create_table('region_alert',
    sa.Column('alert_id', sa.String(length=40), nullable=False),
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('details', sa.Text(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['region_code'], ['dim_region.region_code'], name=op.f('fk_region_alert_region_code')),
    sa.PrimaryKeyConstraint('alert_id', name=op.f('pk_region_alert'))
    )
    with op.batch_alter_table('region_alert', schema=None) as batch_op:
        batch_op.create_index('ix_region_alert_region_status', ['region_code', 'status'], unique=False)

    op.create_table('region_snapshot',
    sa.Column('region_code', sa.String(length=5), nullable=False),
    sa.Column('as_of', sa.DateTime(timezone=True), nullable=False),
    sa.Column('registered', sa.Integer(), nullable=False),
    sa.Column('active', sa.Integer(), nullable=False),
    sa.Column('lapsed', sa.Integer(), nullable=False),
    sa.Column('coverage_ratio', sa.Float(), nullable=True),
    sa.Column('quota_total', sa.Integer(), nullable=False),
    sa.Column('quota_used', sa.Integer(), nullable=False),
    sa.Column('taken_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['region_code'], ['dim_region.region_code'], name=op.f('fk_region_snapshot_region_code')),
    sa.PrimaryKeyConstraint('region_code', 'as_of', name=op.f('pk_region_snapshot'))
    )


def downgrade() -> None:
    op.drop_table('region_snapshot')
    with op.batch_alter_table('region_alert', schema=None) as batch_op:
        batch_op.drop_index('ix_region_alert_region_status')

    op.drop_table('region_alert')
    with op.batch_alter_table('fact_registration', schema=None) as batch_op:
        batch_op.drop_index('ix_fact_registration_region_month')
        batch_op.drop_index('ix_fact_registration_participant')

    op.drop_table('fact_registration')
    with op.batch_alter_table('fact_contribution', schema=None) as batch_op:
        batch_op.drop_index('ix_fact_contribution_region_month')
        batch_op.drop_index('ix_fact_contribution_participant')

    op.drop_table('fact_contribution')
    with op.batch_alter_table('fact_claim', schema=None) as batch_op:
        batch_op.drop_index('ix_fact_claim_region_month')
        batch_op.drop_index('ix_fact_claim_participant')

    op.drop_table('fact_claim')
    op.drop_table('dim_region')
    op.drop_table('dim_program')
