"""WiFi registrations: AUP versions and acceptances, registrations and their history, bans

Revision ID: registrations_0001
Revises: incidents_0001 (approval emails go through its notification_outbox)
"""
import sqlalchemy as sa
from alembic import op


revision = 'registrations_0001'
down_revision = 'incidents_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('aup_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('version', sa.String(length=32), nullable=False),
    sa.Column('title', sa.String(length=200), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('published_by', sa.String(length=120), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('version')
    )
    op.create_table('wifi_bans',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('registration_id', sa.Integer(), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('it_signoff_by', sa.String(length=120), nullable=True),
    sa.Column('it_signoff_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('dsl_signoff_by', sa.String(length=120), nullable=True),
    sa.Column('dsl_signoff_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lifted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('wifi_bans', schema=None) as batch_op:
        batch_op.create_index('ix_wifi_bans_user', ['username', 'lifted_at'], unique=False)

    op.create_table('aup_acceptances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('aup_version_id', sa.Integer(), nullable=False),
    sa.Column('text_sha256', sa.String(length=64), nullable=False),
    sa.Column('accepted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('client_ip', sa.String(length=45), nullable=False),
    sa.Column('parent_name', sa.String(length=200), nullable=True),
    sa.Column('parent_accepted_on', sa.Date(), nullable=True),
    sa.ForeignKeyConstraint(['aup_version_id'], ['aup_versions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('username', 'aup_version_id', name='uq_aup_acceptances_user_version')
    )
    op.create_table('wifi_registrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('device_name', sa.String(length=80), nullable=False),
    sa.Column('device_type', sa.String(length=16), nullable=False),
    sa.Column('mac', sa.String(length=17), nullable=False),
    sa.Column('live_mac', sa.String(length=17), nullable=True),
    sa.Column('mac_private', sa.Boolean(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('aup_version_id', sa.Integer(), nullable=False),
    sa.Column('submitted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sla_breached', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('decided_by', sa.String(length=120), nullable=True),
    sa.Column('decision_note', sa.Text(), nullable=True),
    sa.Column('activated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('noncompliant_since', sa.DateTime(timezone=True), nullable=True),
    sa.Column('failed_checks', sa.String(length=200), nullable=False),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sa.String(length=32), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['aup_version_id'], ['aup_versions.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('live_mac', name='uq_wifi_registrations_live_mac')
    )
    with op.batch_alter_table('wifi_registrations', schema=None) as batch_op:
        batch_op.create_index('ix_wifi_registrations_state_submitted', ['state', 'submitted_at'], unique=False)
        batch_op.create_index('ix_wifi_registrations_user', ['username'], unique=False)

    op.create_table('wifi_registration_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('registration_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=20), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=True),
    sa.Column('note', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['registration_id'], ['wifi_registrations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('wifi_registration_events', schema=None) as batch_op:
        batch_op.create_index('ix_wifi_registration_events_reg', ['registration_id', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('wifi_registration_events', schema=None) as batch_op:
        batch_op.drop_index('ix_wifi_registration_events_reg')

    op.drop_table('wifi_registration_events')
    with op.batch_alter_table('wifi_registrations', schema=None) as batch_op:
        batch_op.drop_index('ix_wifi_registrations_user')
        batch_op.drop_index('ix_wifi_registrations_state_submitted')

    op.drop_table('wifi_registrations')
    op.drop_table('aup_acceptances')
    with op.batch_alter_table('wifi_bans', schema=None) as batch_op:
        batch_op.drop_index('ix_wifi_bans_user')

    op.drop_table('wifi_bans')
    op.drop_table('aup_versions')
