"""PostgreSQL-ready types, the image's place in its request, and the indexes of keyset paging.

* On PostgreSQL only, every ``REAL`` column becomes ``DOUBLE PRECISION`` and every seed ``BIGINT``:
  PostgreSQL's ``real`` is 4 bytes (an epoch heartbeat of 1.7e9 s is kept to about 2 minutes and a
  cost of $0.01 reads back as 0.0099999998) and its ``integer`` holds seeds only up to 2**31-1 (the
  studio's go to 2**32-1). SQLite's REAL and INTEGER are already 8 bytes: nothing changes there.
* ``images.position``: the image's place (0-based) among the images its request saved, so
  ``images_for_request`` lists them in saving order without SQLite's ``rowid``. NULL in older rows.
* History pages are read newest first by ``(created_at, id)`` (keyset paging: the next page starts
  after the last row's pair): indexes on ``(owner, created_at DESC, id DESC)`` (replacing
  ``(owner, created_at DESC)``) and ``(created_at DESC, id DESC)`` (every owner, admin tools), and on
  ``images.request_id`` (a request's images; read when a job is recovered).
* On PostgreSQL with the ``pg_trgm`` extension available (it ships with PostgreSQL's contrib, which
  Debian's server package and the managed services include, and is a trusted extension, so the
  database's owner may create it): trigram indexes on ``prompt`` and ``user_prompt``, so a history
  text search (``ILIKE '%text%'``) reads the index instead of every row. Without it the search
  still works, by reading every row (the log says so).

Revision ID: 0006
Revises: 0005
"""

import logging

import sqlalchemy as sa
from alembic import context, op

log = logging.getLogger("studio.migrations")

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# (table, column) of every REAL column of revisions 0001-0005.
_REAL_COLUMNS = (
    ("images", "cost"), ("images", "generation_time"),
    ("generations", "cost"), ("generations", "estimated_cost"), ("generations", "duration"),
    ("reservations", "amount"), ("reservations", "created_at"), ("reservations", "expires_at"),
    ("pending_writes", "created_at"),
    ("jobs", "estimated_cost"), ("jobs", "heartbeat_at"),
    ("job_items", "start_s"), ("job_items", "end_s"), ("job_items", "progress"), ("job_items", "cost"),
    ("job_items", "estimated_cost"),
)
_SEED_COLUMNS = (("images", "seed"), ("jobs", "base_seed"), ("job_items", "seed"))


def upgrade() -> None:
    if context.get_context().dialect.name == "postgresql":
        for table, column in _REAL_COLUMNS:
            op.alter_column(table, column, type_=sa.Double(), existing_type=sa.REAL())
        for table, column in _SEED_COLUMNS:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer())
    op.add_column("images", sa.Column("position", sa.Integer, nullable=True))
    op.drop_index("idx_images_owner_created", table_name="images")
    op.create_index("idx_images_owner_created_id", "images", ["owner", sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("idx_images_created_id", "images", [sa.text("created_at DESC"), sa.text("id DESC")])
    op.create_index("idx_images_request", "images", ["request_id"])
    if context.get_context().dialect.name == "postgresql":
        _trigram_indexes()


def _trigram_indexes() -> None:
    """GIN trigram indexes for the history's text search, where pg_trgm can be had."""
    if not context.is_offline_mode() and not _created_pg_trgm():
        return
    if context.is_offline_mode():
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in ("prompt", "user_prompt"):
        op.create_index(f"idx_images_{column}_trgm", "images", [column], postgresql_using="gin",
                        postgresql_ops={column: "gin_trgm_ops"})


def _created_pg_trgm() -> bool:
    """Create pg_trgm (in a savepoint: a server without it, or a role not allowed to create it,
    leaves the rest of the upgrade whole); False, with a warning, when it cannot be had."""
    bind = op.get_bind()
    if bind.execute(sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm'")).first() is None:
        log.warning("PostgreSQL has no pg_trgm extension: the history's text search reads every row")
        return False
    try:
        with bind.begin_nested():
            bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as exc:
        log.warning("could not create the pg_trgm extension (%s): the history's text search reads every row",
                    str(exc.orig).strip().splitlines()[0])
        return False
    return True


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
