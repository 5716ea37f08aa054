"""Segment records of video jobs split across Ray actors (finished segments are never recomputed).

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_segments",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("start_pts", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=False),
        sa.Column("end_pts", sa.BigInteger().with_variant(sa.Integer, "sqlite"), nullable=True),
        sa.Column("frames", sa.Integer, nullable=False),
        sa.Column("keyframe_aligned", sa.Boolean, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completions", sa.Integer, nullable=False, server_default="0"),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("result_key", sa.String(512), nullable=True),
        sa.Column("frames_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("stats_json", sa.Text, nullable=True),
        sa.Column("updated_at", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_segments")
