-- 001_init.pg.sql: 001_init.sql for PostgreSQL (see that file for the
-- columns). Applied by jj_db_migrate inside one transaction and recorded in
-- schema_migrations; do not add BEGIN/COMMIT here.
-- Integers are BIGINT: SQLite's are 64-bit, and the engine hands both to
-- Lua as integers. is_active stays an integer 0/1, as in SQLite, so the
-- same SQL and the same JSON serve both.
-- wishlist.rowid stands in for SQLite's implicit rowid (insertion order),
-- the tie-breaker catalog.wishlist() orders by.

CREATE TABLE products (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    price_cents    BIGINT NOT NULL CHECK (price_cents >= 0),
    stock          BIGINT NOT NULL DEFAULT 0 CHECK (stock >= 0),
    category       TEXT NOT NULL,
    images         TEXT NOT NULL DEFAULT '[]',
    is_active      BIGINT NOT NULL DEFAULT 1,
    wishlist_count BIGINT NOT NULL DEFAULT 0,
    version        BIGINT NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE INDEX products_category ON products (category);
CREATE INDEX products_is_active ON products (is_active);

CREATE TABLE wishlist (
    rowid      BIGINT GENERATED ALWAYS AS IDENTITY,
    session_id TEXT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, product_id)
);

CREATE INDEX wishlist_product ON wishlist (product_id);
