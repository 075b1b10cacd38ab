"""incidents: the pupil's year and tutor group when the incident was stored (a snapshot)

Revision ID: incidents_0002
Revises: incidents_0001 (a branch of its own, beside identity, registrations and compliance)

Incidents stored before this migration keep NULL: the users' year and tutor group today would be
"now", not "at the time", so nothing is backfilled and the dashboard shows "-" for them.
"""
import sqlalchemy as sa
from alembic import op


revision = 'incidents_0002'
down_revision = 'incidents_0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN on both stores (no SQLite table copy, which would lose ix_incidents_level_age).
    op.add_column('incidents', sa.Column('subject_year_group', sa.Integer(), nullable=True))
    op.add_column('incidents', sa.Column('subject_tutor_group', sa.String(length=32), nullable=True))


def downgrade() -> None:
    # SQLite >= 3.35 drops a column in place; a batch copy would rebuild the table without its DESC index.
    op.drop_column('incidents', 'subject_tutor_group')
    op.drop_column('incidents', 'subject_year_group')
