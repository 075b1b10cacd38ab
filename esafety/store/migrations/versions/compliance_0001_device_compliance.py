"""Device compliance: enrolled devices, enrolment tokens, per-check state and history, exceptions, agent sessions

Revision ID: compliance_0001
Revises: incidents_0001 (compliance incidents go through its workflow tables)
"""
import sqlalchemy as sa
from alembic import op


revision = 'compliance_0001'
down_revision = 'incidents_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('devices',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('platform', sa.String(length=16), nullable=False),
    sa.Column('os_version', sa.String(length=200), nullable=False),
    sa.Column('agent_version', sa.String(length=64), nullable=False),
    sa.Column('macs', sa.JSON(), nullable=False),
    sa.Column('owner', sa.String(length=120), nullable=True),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('credential_sha256', sa.String(length=64), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('last_ip', sa.String(length=45), nullable=True),
    sa.Column('last_user', sa.String(length=120), nullable=True),
    sa.Column('snapshot_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('needs_snapshot', sa.Boolean(), nullable=False),
    sa.Column('monitor_sha256', sa.String(length=64), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('state_since', sa.DateTime(timezone=True), nullable=False),
    sa.Column('tamper_raised_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('retired_by', sa.String(length=120), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.create_index('ix_devices_hostname', ['hostname'], unique=False)
        batch_op.create_index('ix_devices_state', ['state'], unique=False)

    op.create_table('enrolment_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_sha256', sa.String(length=64), nullable=False),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('note', sa.String(length=200), nullable=False),
    sa.Column('owner', sa.String(length=120), nullable=True),
    sa.Column('used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('device_id', sa.String(length=32), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_sha256')
    )
    op.create_table('agent_sessions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=32), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('ip', sa.String(length=45), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=True),
    sa.Column('first_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('device_id', 'username', 'ip', name='uq_agent_sessions_device_user_ip')
    )
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_agent_sessions_ip', ['ip', 'last_seen'], unique=False)
        batch_op.create_index('ix_agent_sessions_seen', ['last_seen'], unique=False)

    op.create_table('device_check_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('device_id', sa.String(length=32), nullable=False),
    sa.Column('check_id', sa.String(length=64), nullable=True),
    sa.Column('from_status', sa.String(length=16), nullable=True),
    sa.Column('to_status', sa.String(length=16), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=True),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('device_check_events', schema=None) as batch_op:
        batch_op.create_index('ix_device_check_events_device', ['device_id', 'id'], unique=False)

    op.create_table('device_checks',
    sa.Column('device_id', sa.String(length=32), nullable=False),
    sa.Column('check_id', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('critical', sa.Boolean(), nullable=False),
    sa.Column('evidence', sa.JSON(), nullable=False),
    sa.Column('duration_ms', sa.Integer(), nullable=False),
    sa.Column('checked_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('device_id', 'check_id')
    )
    with op.batch_alter_table('device_checks', schema=None) as batch_op:
        batch_op.create_index('ix_device_checks_status', ['check_id', 'status'], unique=False)

    op.create_table('device_exceptions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('device_id', sa.String(length=32), nullable=False),
    sa.Column('check_id', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('approved_by', sa.String(length=200), nullable=False),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_by', sa.String(length=120), nullable=True),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('device_exceptions', schema=None) as batch_op:
        batch_op.create_index('ix_device_exceptions_device', ['device_id', 'expires_at'], unique=False)

    op.create_table('device_macs',
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('device_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['device_id'], ['devices.id'], ),
    sa.PrimaryKeyConstraint('mac', 'device_id')
    )
    with op.batch_alter_table('device_macs', schema=None) as batch_op:
        batch_op.create_index('ix_device_macs_device', ['device_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('device_macs', schema=None) as batch_op:
        batch_op.drop_index('ix_device_macs_device')

    op.drop_table('device_macs')
    with op.batch_alter_table('device_exceptions', schema=None) as batch_op:
        batch_op.drop_index('ix_device_exceptions_device')

    op.drop_table('device_exceptions')
    with op.batch_alter_table('device_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_device_checks_status')

    op.drop_table('device_checks')
    with op.batch_alter_table('device_check_events', schema=None) as batch_op:
        batch_op.drop_index('ix_device_check_events_device')

    op.drop_table('device_check_events')
    with op.batch_alter_table('agent_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_sessions_seen')
        batch_op.drop_index('ix_agent_sessions_ip')

    op.drop_table('agent_sessions')
    op.drop_table('enrolment_tokens')
    with op.batch_alter_table('devices', schema=None) as batch_op:
        batch_op.drop_index('ix_devices_state')
        batch_op.drop_index('ix_devices_hostname')

    op.drop_table('devices')
