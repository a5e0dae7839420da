"""Alembic environment of the review service.

The store runs migrations programmatically (`howsure.service.db.upgrade`), handing Alembic an
open connection inside a transaction in ``config.attributes["connection"]``. Running the
``alembic`` command line against this directory also works when ``sqlalchemy.url`` is set.
"""

from alembic import context

from howsure.service.db import make_engine, metadata

config = context.config


def run_migrations(connection) -> None:
    # render_as_batch: future ALTERs on SQLite are done by copying the table, the only way
    # SQLite can change a column.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                      compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    try:
        with engine.connect() as connection:
            run_migrations(connection)
            connection.commit()
    finally:
        engine.dispose()
