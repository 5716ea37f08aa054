"""Batch jobs: one row per target (its input, state, and result or failure reason).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(32), sa.ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(512), nullable=False, server_default=""),
        sa.Column("target_key", sa.String(512), nullable=True),
        sa.Column("media_kind", sa.String(16), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("result_key", sa.String(512), nullable=True),
        sa.Column("result_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("faces_swapped", sa.Integer, nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("stats_json", sa.Text, nullable=True),
    )


def downgrade() -> None:
    op.drop_table("job_items")
