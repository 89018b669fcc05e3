"""job_items.warnings, and who is running each request in flight (reservations.pid, host,
process_started, request).

``job_items.warnings``: a JSON list of what a completed scene should be told (a model without seeds,
stored images reused); ``error`` is only a failure's.

Every request is recorded in ``reservations`` before its provider is called, with its bound, whether
or not a daily budget is set. ``pid``, ``host`` and ``process_started`` (the process's start time, as
the operating system reports it, so a reused pid is not taken for the same process) say who runs it;
``request`` (JSON: owner, provider, model, mode, prompt, n, estimate) is what a request whose process
died is booked as ("interrupted, possibly billed"). NULL in rows made before.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("job_items", sa.Column("warnings", sa.Text, nullable=True))
    op.add_column("reservations", sa.Column("pid", sa.Integer, nullable=True))
    op.add_column("reservations", sa.Column("host", sa.Text, nullable=True))
    op.add_column("reservations", sa.Column("process_started", sa.Text, nullable=True))
    op.add_column("reservations", sa.Column("request", sa.Text, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
