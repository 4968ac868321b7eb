-- 002_cache_journal.pg.sql: 002_cache_journal.sql for PostgreSQL.
CREATE TABLE cache_journal (
  id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  op TEXT NOT NULL CHECK (op IN ('key', 'tag')),
  ns TEXT NOT NULL,
  key TEXT NOT NULL DEFAULT '',
  version BIGINT,
  created_at TEXT NOT NULL DEFAULT (to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
);
