"""Initial schema: jobs and api_keys.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("media_kind", sa.String(16), nullable=True),
        sa.Column("created_at", sa.Float, nullable=False, index=True),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float, nullable=True),
        sa.Column("finished_at", sa.Float, nullable=True),
        sa.Column("settings_json", sa.Text, nullable=False),
        sa.Column("source_keys_json", sa.Text, nullable=False),
        sa.Column("target_key", sa.String(512), nullable=False),
        sa.Column("result_key", sa.String(512), nullable=True),
        sa.Column("result_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("stored_bytes", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frames_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("frames_total", sa.Integer, nullable=True),
        sa.Column("fps", sa.Float, nullable=False, server_default="0"),
        sa.Column("eta_s", sa.Float, nullable=True),
        sa.Column("stage", sa.String(32), nullable=False, server_default=""),
        sa.Column("faces_swapped", sa.Integer, nullable=True),
        sa.Column("error_type", sa.String(128), nullable=True),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("error_message", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("expired", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False, index=True),
        sa.Column("key_hash", sa.String(128), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False, server_default=sa.false()),
    )


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_table("jobs")
