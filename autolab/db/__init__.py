"""The archive's database: its tables, engines for SQLite and PostgreSQL, the migrations
that create and upgrade the schema, and the reader of the old file layout."""
