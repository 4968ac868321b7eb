-- Cache invalidations that could not reach Redis (down or timed out). The
-- database is the source of truth, so the journal lives here; workers
-- replay it into Redis before they trust Redis again.
CREATE TABLE cache_journal (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  op TEXT NOT NULL CHECK (op IN ('key', 'tag')),
  ns TEXT NOT NULL,
  key TEXT NOT NULL DEFAULT '',
  version INTEGER,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
