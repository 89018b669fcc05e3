"""Alembic's environment for the studio's database, run by ``studio.migrations`` (no alembic.ini).

Online, the caller hands over a SQLAlchemy connection that already holds the schema lock inside its
own transaction (``config.attributes["connection"]``): every revision and the version row are written
in that one transaction, which the caller commits. Offline (``--sql``), the SQL is rendered for the
dialect of ``sqlalchemy.url`` instead, e.g. to review what PostgreSQL will run.
"""

from alembic import context

config = context.config


def _record_step(*, ctx, step, heads, run_args) -> None:  # noqa: ARG001 (Alembic passes all four)
    """Keep the revisions applied, so the caller can say what it did."""
    config.attributes.setdefault("applied", []).append(step.up_revision_id)


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True,
                      transactional_ddl=True)
else:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        # SQLite alters most things by copying the table: let later revisions' batch_alter_table do that.
        render_as_batch=connection.dialect.name == "sqlite",
        # SQLite and PostgreSQL both roll DDL back: a failed upgrade leaves the previous schema whole.
        transactional_ddl=True,
        on_version_apply=_record_step,
    )

with context.begin_transaction():
    context.run_migrations()
