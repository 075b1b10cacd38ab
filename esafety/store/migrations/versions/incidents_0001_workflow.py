"""incident workflow: hash-chained history, links, outbox, dashboard sessions and tokens

Revision ID: incidents_0001
Revises: 0001_core
"""
import sqlalchemy as sa
from alembic import op

revision = 'incidents_0001'
down_revision = '0001_core'
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    with op.batch_alter_table('incidents', schema=None) as b:
        b.add_column(sa.Column('acknowledged_by', sa.String(length=120), nullable=True))
        b.add_column(sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True))
        b.add_column(sa.Column('escalations', sa.Integer(), server_default='0', nullable=False))
        b.add_column(sa.Column('pipeline_done', sa.Boolean(), server_default=sa.false(), nullable=False))
        b.create_index('ix_incidents_pipeline', ['pipeline_done'], unique=False)
    # Outside the batch: SQLite's table copy cannot rebuild an expression (DESC) index.
    op.create_index('ix_incidents_level_age', 'incidents', [sa.text('level DESC'), 'created_at', 'id'], unique=False)
    # Incidents stored before this migration have nothing left for the pipeline to do.
    op.execute(sa.text("UPDATE incidents SET pipeline_done = :t").bindparams(t=True))

    op.create_table('incident_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('subject', sa.String(length=120), nullable=True),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=120), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('seq')
    )
    op.create_index('ix_incident_events_incident', 'incident_events', ['incident_id', 'seq'], unique=False)
    op.create_index('ix_incident_events_subject', 'incident_events', ['subject', 'seq'], unique=False)

    head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])

    op.create_table('incident_links',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('a_id', sa.Integer(), nullable=False),
    sa.Column('b_id', sa.Integer(), nullable=False),
    sa.Column('created_by', sa.String(length=120), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('a_id', 'b_id', name='uq_incident_links_pair')
    )
    op.create_index('ix_incident_links_b', 'incident_links', ['b_id'], unique=False)

    op.create_table('incident_keys',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )

    op.create_table('notification_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('incident_id', sa.Integer(), nullable=True),
    sa.Column('recipient', sa.String(length=254), nullable=False),
    sa.Column('subject', sa.String(length=200), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=8), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_notification_outbox_due', 'notification_outbox', ['status', 'next_attempt_at'], unique=False)

    op.create_table('digest_marks',
    sa.Column('queue', sa.String(length=32), nullable=False),
    sa.Column('last_incident_id', sa.Integer(), nullable=False),
    sa.Column('sent_on', sa.String(length=10), nullable=False),
    sa.PrimaryKeyConstraint('queue')
    )

    op.create_table('web_sessions',
    sa.Column('id_hash', sa.String(length=64), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id_hash')
    )
    op.create_index('ix_web_sessions_user', 'web_sessions', ['username'], unique=False)

    op.create_table('login_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=120), nullable=False),
    sa.Column('ip', sa.String(length=45), nullable=False),
    sa.Column('ok', sa.Boolean(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_login_attempts_user_at', 'login_attempts', ['username', 'at'], unique=False)
    op.create_index('ix_login_attempts_ip_at', 'login_attempts', ['ip', 'at'], unique=False)

    op.create_table('api_tokens',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('scope', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name'),
    sa.UniqueConstraint('token_hash')
    )


def downgrade() -> None:
    for t in ('api_tokens', 'login_attempts', 'web_sessions', 'digest_marks', 'notification_outbox',
              'incident_keys', 'incident_links', 'audit_head', 'incident_events'):
        op.drop_table(t)
    op.drop_index('ix_incidents_level_age', table_name='incidents')
    with op.batch_alter_table('incidents', schema=None) as b:
        b.drop_index('ix_incidents_pipeline')
        b.drop_column('pipeline_done')
        b.drop_column('escalations')
        b.drop_column('closed_at')
        b.drop_column('acknowledged_by')
