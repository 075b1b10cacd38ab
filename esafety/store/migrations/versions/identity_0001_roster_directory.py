"""identity: roster and directory fields on users, RADIUS/portal sessions on ip_bindings, identity_syncs

Revision ID: identity_0001
Revises: incidents_0001 (a branch of its own, beside registrations and compliance)
"""
import sqlalchemy as sa
from alembic import op


revision = 'identity_0001'
down_revision = 'incidents_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as b:
        b.add_column(sa.Column('source', sa.String(length=16), server_default='local', nullable=False))
        b.add_column(sa.Column('upn', sa.String(length=32), nullable=True))
        b.add_column(sa.Column('admission_no', sa.String(length=32), nullable=True))
        b.add_column(sa.Column('year_group', sa.Integer(), nullable=True))
        b.add_column(sa.Column('tutor_group', sa.String(length=32), server_default='', nullable=False))
        b.add_column(sa.Column('directory_dn', sa.String(length=500), nullable=True))
        b.add_column(sa.Column('leaving_date', sa.Date(), nullable=True))
        b.add_column(sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
        b.create_index('ix_users_year_tutor', ['year_group', 'tutor_group'], unique=False)
        b.create_index('ix_users_source', ['source'], unique=False)
        b.create_index('uq_users_upn', ['upn'], unique=True)
        b.create_index('uq_users_admission_no', ['admission_no'], unique=True)
    with op.batch_alter_table('ip_bindings', schema=None) as b:
        b.add_column(sa.Column('session_id', sa.String(length=128), nullable=True))
        b.add_column(sa.Column('nas', sa.String(length=64), nullable=True))
    op.create_table('identity_syncs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('dry_run', sa.Boolean(), nullable=False),
    sa.Column('origin', sa.String(length=500), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('updated', sa.Integer(), nullable=False),
    sa.Column('retired', sa.Integer(), nullable=False),
    sa.Column('unchanged', sa.Integer(), nullable=False),
    sa.Column('error', sa.Text(), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_identity_syncs_source_started', 'identity_syncs', ['source', 'started_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_identity_syncs_source_started', table_name='identity_syncs')
    op.drop_table('identity_syncs')
    with op.batch_alter_table('ip_bindings', schema=None) as b:
        b.drop_column('nas')
        b.drop_column('session_id')
    with op.batch_alter_table('users', schema=None) as b:
        b.drop_index('uq_users_admission_no')
        b.drop_index('uq_users_upn')
        b.drop_index('ix_users_source')
        b.drop_index('ix_users_year_tutor')
        for col in ('updated_at', 'retired_at', 'leaving_date', 'directory_dn', 'tutor_group', 'year_group',
                    'admission_no', 'upn', 'source'):
            b.drop_column(col)
