"""Baseline: the schema of the last release before migrations (commit 048d061).

Revision ID: 0001
Revises: (none)

Every table and index is created only when missing: a data directory from before migrations has
the index's tables, and the jobs tables only if a batch job was ever made there. Both engines take
the same types: TEXT, INTEGER, REAL (the studio stores times as ISO text or epoch seconds, booleans
as 0/1, lists and dicts as JSON text).
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _text(name: str, *constraints: sa.ForeignKey, nullable: bool = True, default: str | None = None,
          **kw) -> sa.Column:
    return sa.Column(name, sa.Text, *constraints, nullable=nullable, server_default=default, **kw)


def _integer(name: str, nullable: bool = True, default: int | None = None, **kw) -> sa.Column:
    return sa.Column(name, sa.Integer, nullable=nullable,
                     server_default=None if default is None else sa.text(str(default)), **kw)


def _real(name: str, nullable: bool = True, default: float | None = None) -> sa.Column:
    return sa.Column(name, sa.REAL, nullable=nullable,
                     server_default=None if default is None else sa.text(str(default)))


def _index(name: str, table: str, *columns: str) -> None:
    """``columns`` may end in " DESC" (history pages read newest first)."""
    op.create_index(name, table, [sa.text(c) if " " in c else c for c in columns], if_not_exists=True)


def upgrade() -> None:
    op.create_table(
        "images",
        _text("id", primary_key=True),
        _text("owner", nullable=False),
        _text("path", nullable=False, unique=True),
        _text("thumb_path"),
        _text("sha256", nullable=False),
        _integer("width", nullable=False),
        _integer("height", nullable=False),
        _text("format", nullable=False),
        _integer("size_bytes", nullable=False),
        _text("provider", nullable=False),
        _text("model", nullable=False),
        _text("mode", nullable=False),
        _text("prompt", nullable=False),
        _text("user_prompt", nullable=False, default=""),
        _text("negative_prompt", nullable=False, default=""),
        _text("style"),
        _text("params", nullable=False, default="{}"),
        _integer("seed"),
        _text("category", nullable=False, default=""),
        _text("tags", nullable=False, default="[]"),
        _real("cost", nullable=False, default=0),
        _real("generation_time", nullable=False, default=0),
        _text("created_at", nullable=False),
        _text("day", nullable=False),
        _text("status", nullable=False, default="completed"),
        _text("parent_id"),
        _text("request_id"),
        _text("cache_key"),
        _integer("shared", nullable=False, default=0),
        if_not_exists=True,
    )
    _index("idx_images_owner_created", "images", "owner", "created_at DESC")
    _index("idx_images_cache", "images", "cache_key")
    _index("idx_images_parent", "images", "parent_id")
    _index("idx_images_provider", "images", "provider", "created_at DESC")

    op.create_table(
        "image_tags",
        _text("image_id", sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        _text("tag", nullable=False),
        sa.PrimaryKeyConstraint("image_id", "tag"),
        if_not_exists=True,
    )
    _index("idx_image_tags_tag", "image_tags", "tag")

    op.create_table(
        "generations",
        _text("id", primary_key=True),
        _text("owner", nullable=False),
        _text("created_at", nullable=False),
        _text("day", nullable=False),
        _text("provider", nullable=False),
        _text("model", nullable=False),
        _text("mode", nullable=False),
        _text("prompt", nullable=False),
        _integer("n", nullable=False),
        _text("status", nullable=False),
        _text("error_kind"),
        _text("error"),
        _real("cost", nullable=False, default=0),
        _real("estimated_cost", nullable=False, default=0),
        _real("duration", nullable=False, default=0),
        _integer("cached", nullable=False, default=0),
        if_not_exists=True,
    )
    _index("idx_generations_day", "generations", "day")

    op.create_table(
        "reservations",
        _text("id", primary_key=True),
        _text("day", nullable=False),
        _real("amount", nullable=False),
        _real("created_at", nullable=False),
        if_not_exists=True,
    )

    op.create_table(
        "pending_writes",
        _text("key", primary_key=True),
        _text("request_id", nullable=False),
        _integer("pid", nullable=False),
        _text("host", nullable=False),
        _real("created_at", nullable=False),
        if_not_exists=True,
    )
    _index("idx_pending_request", "pending_writes", "request_id")

    op.create_table(
        "boards",
        _text("id", primary_key=True),
        _text("owner", nullable=False),
        _text("name", nullable=False),
        _text("notes", nullable=False, default=""),
        _text("created_at", nullable=False),
        _text("updated_at", nullable=False),
        sa.UniqueConstraint("owner", "name"),
        if_not_exists=True,
    )
    op.create_table(
        "board_items",
        _text("board_id", sa.ForeignKey("boards.id", ondelete="CASCADE"), nullable=False),
        _text("image_id", sa.ForeignKey("images.id", ondelete="CASCADE"), nullable=False),
        _integer("position", nullable=False),
        _text("note", nullable=False, default=""),
        _text("added_at", nullable=False),
        sa.PrimaryKeyConstraint("board_id", "image_id"),
        if_not_exists=True,
    )

    op.create_table(
        "jobs",
        _text("id", primary_key=True),
        _text("owner", nullable=False),
        _text("status", nullable=False),
        _text("provider", nullable=False),
        _text("model", nullable=False),
        _text("style"),
        _text("seed_policy", nullable=False),
        _integer("base_seed"),
        _integer("concurrency", nullable=False),
        _text("options", nullable=False, default="{}"),
        _text("webhook_url"),
        _text("script_name", nullable=False, default=""),
        _text("script_format", nullable=False, default=""),
        _integer("total", nullable=False),
        _real("estimated_cost", nullable=False, default=0),
        _text("error"),
        _text("runner"),
        _real("heartbeat_at"),
        _integer("webhook_delivered", nullable=False, default=0),
        _text("webhook_error"),
        _text("created_at", nullable=False),
        _text("updated_at", nullable=False),
        _text("started_at"),
        _text("finished_at"),
        if_not_exists=True,
    )
    _index("idx_jobs_owner", "jobs", "owner", "created_at DESC")
    _index("idx_jobs_status", "jobs", "status")

    op.create_table(
        "job_items",
        _text("job_id", sa.ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False),
        _integer("idx", nullable=False),
        _text("text", nullable=False),
        _text("prompt", nullable=False, default=""),
        _text("negative_prompt", nullable=False, default=""),
        _text("timestamp"),
        _real("start_s"),
        _real("end_s"),
        _integer("line", nullable=False, default=0),
        _text("overrides", nullable=False, default="{}"),
        _integer("seed"),
        _text("status", nullable=False),
        _real("progress", nullable=False, default=0),
        _integer("attempts", nullable=False, default=0),
        _text("request_id"),
        _text("error"),
        _text("error_kind"),
        _real("cost", nullable=False, default=0),
        _real("estimated_cost", nullable=False, default=0),
        _text("image_ids", nullable=False, default="[]"),
        _integer("cancel_requested", nullable=False, default=0),
        _text("created_at", nullable=False),
        _text("started_at"),
        _text("updated_at"),
        _text("finished_at"),
        sa.PrimaryKeyConstraint("job_id", "idx"),
        if_not_exists=True,
    )
    _index("idx_job_items_status", "job_items", "job_id", "status")


def downgrade() -> None:
    raise NotImplementedError("the studio does not downgrade its database: restore a backup of the data directory")
