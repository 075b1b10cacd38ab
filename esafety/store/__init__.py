"""Persistence: SQLAlchemy 2 models, engine factory, background batch writer, Alembic migrations."""
