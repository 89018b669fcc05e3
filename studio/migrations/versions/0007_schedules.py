"""schedules: batch templates run on a cron schedule (issue 13, "Scheduled generation").

One row per schedule: its unique ``name``, the ``owner`` its jobs run for (the studio's owner key,
which never leaves the server), a five-field ``cron`` expression read in ``timezone`` (an IANA
name), the batch ``template`` (JSON: the script and the batch options) and whether it is
``enabled``. ``next_run_at`` is the next due time (UTC, ``YYYY-MM-DDTHH:MM:SSZ``, so text order is
time order); a process fires a due schedule only by moving ``next_run_at`` on from the value it read
(one UPDATE), which is how several processes fire each due time once (``studio.schedules``).
``last_run_at``, ``last_job_id`` and ``last_error`` say what its latest firing did; ``runs`` counts them.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "schedules",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False, unique=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("cron", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False, server_default="UTC"),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("enabled", sa.Integer, nullable=False, server_default="1"),
        sa.Column("next_run_at", sa.Text, nullable=False),
        sa.Column("last_run_at", sa.Text, nullable=True),
        sa.Column("last_job_id", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False, server_default="0"),
        sa.Column("created_at", sa.Text, nullable=False),
        sa.Column("updated_at", sa.Text, nullable=False),
    )
    op.create_index("idx_schedules_due", "schedules", ["enabled", "next_run_at"])


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
