-- 001_init.sql: the catalogue and the per-session wishlist.
-- Applied by jj_db_migrate inside one transaction together with
-- PRAGMA user_version = 1; do not add BEGIN/COMMIT here.
-- Timestamps are ISO-8601 UTC text; prices are integer cents; images is a
-- JSON array of URLs; version is bumped on every update (optimistic locking
-- and cache invalidation).

CREATE TABLE products (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    description    TEXT NOT NULL DEFAULT '',
    price_cents    INTEGER NOT NULL CHECK (price_cents >= 0),
    stock          INTEGER NOT NULL DEFAULT 0 CHECK (stock >= 0),
    category       TEXT NOT NULL,
    images         TEXT NOT NULL DEFAULT '[]',
    is_active      INTEGER NOT NULL DEFAULT 1,
    wishlist_count INTEGER NOT NULL DEFAULT 0,
    version        INTEGER NOT NULL DEFAULT 1,
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);

CREATE INDEX products_category ON products (category);
CREATE INDEX products_is_active ON products (is_active);

CREATE TABLE wishlist (
    session_id TEXT NOT NULL,
    product_id TEXT NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    created_at TEXT NOT NULL,
    PRIMARY KEY (session_id, product_id)
);

-- "Who wishlisted this product" (and the cascade on product delete) would
-- otherwise scan the whole table: the primary key leads with session_id.
CREATE INDEX wishlist_product ON wishlist (product_id);
