"""The archive's first schema: campaigns, records, superseded records, files, texts.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

KEY = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")
SERIAL = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "archive_campaigns",
        sa.Column("name", KEY, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("benchmark", sa.String(200)),
        sa.Column("status", sa.String(40)),
        sa.Column("started_at", sa.DateTime),
        sa.Column("body", sa.Text),
    )
    op.create_table(
        "archive_records",
        sa.Column("campaign", KEY, primary_key=True),
        sa.Column("kind", sa.String(40), primary_key=True),
        sa.Column("id", KEY, primary_key=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("candidate_id", KEY),
        sa.Column("proposal_id", KEY),
        sa.Column("thread", sa.Integer),
        sa.Column("body", sa.Text, nullable=False),
    )
    for name, columns in {
        "revision": ["campaign", "revision"],
        "order": ["campaign", "kind", "created_at", "id"],
        "candidate": ["campaign", "kind", "candidate_id"],
        "proposal": ["campaign", "kind", "proposal_id"],
        "thread": ["campaign", "kind", "thread"],
        "day": ["kind", "created_at"],
    }.items():
        op.create_index(f"ix_archive_records_{name}", "archive_records", columns)
    op.create_table(
        "archive_superseded",
        sa.Column("seq", SERIAL, primary_key=True, autoincrement=True),
        sa.Column("campaign", KEY, nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("id", KEY, nullable=False),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("superseded_at", sa.DateTime, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("candidate_id", KEY),
        sa.Column("body", sa.Text, nullable=False),
    )
    op.create_index("ix_archive_superseded_revision", "archive_superseded",
                    ["campaign", "revision"])
    op.create_index("ix_archive_superseded_record", "archive_superseded",
                    ["campaign", "kind", "id"])
    op.create_table(
        "archive_files",
        sa.Column("campaign", KEY, primary_key=True),
        sa.Column("candidate_id", KEY, primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
    )
    op.create_table(
        "archive_texts",
        sa.Column("campaign", KEY, primary_key=True),
        sa.Column("path", sa.String(1000), primary_key=True),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    for table in ("archive_texts", "archive_files", "archive_superseded", "archive_records",
                  "archive_campaigns"):
        op.drop_table(table)
