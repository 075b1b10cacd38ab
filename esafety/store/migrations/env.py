from __future__ import annotations

from alembic import context

from esafety.store.db import get_engine
from esafety.store.models import Base
import esafety.incidents.tables, esafety.webauth  # noqa: F401,E401 - incident workflow tables (autogenerate)
import esafety.registrations.tables  # noqa: F401 - WiFi registration tables (autogenerate)
import esafety.compliance.tables  # noqa: F401 - device compliance tables (autogenerate)
import esafety.identity.tables  # noqa: F401 - roster and directory sync history (autogenerate)

config = context.config
target_metadata = Base.metadata


def run_migrations_online() -> None:
    engine = get_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata,
                          render_as_batch=connection.dialect.name == "sqlite")
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
