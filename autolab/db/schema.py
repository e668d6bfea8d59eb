"""The archive's tables, as the migrations leave them (a test compares the two).

Every row belongs to one campaign: a PostgreSQL database holds many, each with its own
records, and a SQLite file usually one. Records are pydantic models stored as JSON
(`body`, exact bytes) with the fields that are queried copied into indexed columns.

- `archive_campaigns`: the campaign record, and `revision`, bumped by every write of the
  campaign's records. Writers take its row lock, so revisions commit in order: a reader
  that has seen revision R has seen every write up to R, and fetches only what is newer.
- `archive_records`: the live records, one per (campaign, kind, id); a later put of the
  same id replaces it (and gets the new revision).
- `archive_superseded`: records moved aside after a failure of the machine, kept.
- `archive_files`: each candidate's files (a record implies its files: one transaction).
- `archive_texts`: text kept with the records (proposal transcripts).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# ids and names compare byte by byte on PostgreSQL too, whatever the database's locale
Key = sa.String(200).with_variant(sa.String(200, collation="C"), "postgresql")
Serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")  # SQLite's rowid autoincrement

campaigns = sa.Table(
    "archive_campaigns", metadata,
    sa.Column("name", Key, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("benchmark", sa.String(200)),
    sa.Column("status", sa.String(40)),
    sa.Column("started_at", sa.DateTime),
    sa.Column("body", sa.Text),
)

records = sa.Table(
    "archive_records", metadata,
    sa.Column("campaign", Key, primary_key=True),
    sa.Column("kind", sa.String(40), primary_key=True),
    sa.Column("id", Key, primary_key=True),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("candidate_id", Key),
    sa.Column("proposal_id", Key),
    sa.Column("thread", sa.Integer),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("ix_archive_records_revision", "campaign", "revision"),
    sa.Index("ix_archive_records_order", "campaign", "kind", "created_at", "id"),
    sa.Index("ix_archive_records_candidate", "campaign", "kind", "candidate_id"),
    sa.Index("ix_archive_records_proposal", "campaign", "kind", "proposal_id"),
    sa.Index("ix_archive_records_thread", "campaign", "kind", "thread"),
    sa.Index("ix_archive_records_day", "kind", "created_at"),
)

superseded = sa.Table(
    "archive_superseded", metadata,
    sa.Column("seq", Serial, primary_key=True, autoincrement=True),
    sa.Column("campaign", Key, nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    sa.Column("id", Key, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("superseded_at", sa.DateTime, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("candidate_id", Key),
    sa.Column("body", sa.Text, nullable=False),
    sa.Index("ix_archive_superseded_revision", "campaign", "revision"),
    sa.Index("ix_archive_superseded_record", "campaign", "kind", "id"),
)

files = sa.Table(
    "archive_files", metadata,
    sa.Column("campaign", Key, primary_key=True),
    sa.Column("candidate_id", Key, primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
)

texts = sa.Table(
    "archive_texts", metadata,
    sa.Column("campaign", Key, primary_key=True),
    sa.Column("path", sa.String(1000), primary_key=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)
