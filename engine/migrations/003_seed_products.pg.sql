-- 003_seed_products.pg.sql: 003_seed_products.sql for PostgreSQL, the same
-- 240 rows (the same functions of n; see that file). Only the spellings
-- differ: lpad for printf, to_char + intervals for strftime, ON CONFLICT
-- for INSERT OR IGNORE.

WITH RECURSIVE
  seq(n) AS (
    SELECT 0
    UNION ALL
    SELECT n + 1 FROM seq WHERE n < 239
  ),
  adjectives(i, word) AS (
    VALUES (0, 'Classic'), (1, 'Deluxe'), (2, 'Compact'), (3, 'Eco'), (4, 'Premium'),
           (5, 'Vintage'), (6, 'Smart'), (7, 'Rugged'), (8, 'Essential'), (9, 'Ultra'),
           (10, 'Handmade'), (11, 'Travel')
  ),
  categories(i, name, blurb) AS (
    VALUES (0, 'electronics', 'Reliable electronics with a two-year warranty.'),
           (1, 'books', 'A well-bound edition for curious readers.'),
           (2, 'clothing', 'Comfortable fit, machine washable.'),
           (3, 'home', 'Makes everyday life at home a little easier.'),
           (4, 'sports', 'Built for training, tested by athletes.'),
           (5, 'toys', 'Safe, durable fun for ages 6 and up.'),
           (6, 'beauty', 'Gentle on skin, free of parabens.'),
           (7, 'grocery', 'Sourced from small farms, packed fresh.'),
           (8, 'garden', 'Weather-resistant and easy to maintain.'),
           (9, 'automotive', 'Fits most cars, vans and trucks.')
  ),
  nouns(cat, i, word) AS (
    VALUES (0, 0, 'Wireless Headphones'), (0, 1, 'Bluetooth Speaker'), (0, 2, 'USB-C Charger'),
           (0, 3, 'Mechanical Keyboard'), (0, 4, '4K Monitor'),
           (1, 0, 'Mystery Novel'), (1, 1, 'Cookbook'), (1, 2, 'World Atlas'),
           (1, 3, 'Poetry Collection'), (1, 4, 'Science Guide'),
           (2, 0, 'Cotton T-Shirt'), (2, 1, 'Denim Jacket'), (2, 2, 'Wool Sweater'),
           (2, 3, 'Running Shorts'), (2, 4, 'Rain Coat'),
           (3, 0, 'Coffee Mug'), (3, 1, 'Table Lamp'), (3, 2, 'Throw Blanket'),
           (3, 3, 'Chef Knife'), (3, 4, 'Storage Basket'),
           (4, 0, 'Yoga Mat'), (4, 1, 'Tennis Racket'), (4, 2, 'Water Bottle'),
           (4, 3, 'Cycling Helmet'), (4, 4, 'Jump Rope'),
           (5, 0, 'Building Blocks'), (5, 1, 'Puzzle'), (5, 2, 'Plush Bear'),
           (5, 3, 'Toy Train'), (5, 4, 'Kite'),
           (6, 0, 'Face Cream'), (6, 1, 'Shampoo'), (6, 2, 'Lip Balm'),
           (6, 3, 'Perfume'), (6, 4, 'Nail Polish'),
           (7, 0, 'Olive Oil'), (7, 1, 'Green Tea'), (7, 2, 'Dark Chocolate'),
           (7, 3, 'Honey Jar'), (7, 4, 'Pasta'),
           (8, 0, 'Garden Hose'), (8, 1, 'Flower Seeds'), (8, 2, 'Pruning Shears'),
           (8, 3, 'Planter Pot'), (8, 4, 'Bird Feeder'),
           (9, 0, 'Car Wax'), (9, 1, 'Floor Mats'), (9, 2, 'Phone Mount'),
           (9, 3, 'Jump Starter'), (9, 4, 'Tire Gauge')
  ),
  rows(n, id, cat, noun, adj) AS (
    SELECT n,
           'p-' || lpad((n + 1)::text, 4, '0'),
           n % 10,
           (n / 10) % 5,
           -- rows sharing (cat, noun) differ in n / 50, so their adjectives differ
           (n / 50 + (n % 50) * 5) % 12
    FROM seq
  )
INSERT INTO products
  (id, name, description, price_cents, stock, category, images, is_active,
   wishlist_count, version, created_at, updated_at)
SELECT r.id,
       a.word || ' ' || nn.word,
       'The ' || lower(a.word) || ' ' || lower(nn.word) || ' from our ' || c.name
         || ' range. ' || c.blurb,
       CASE
         WHEN r.n % 61 = 60 THEN 0
         ELSE ((r.n * 37) % 250 + 1) * 100
              - CASE r.n % 4 WHEN 0 THEN 1 WHEN 1 THEN 0 WHEN 2 THEN 50 ELSE 5 END
       END,
       CASE WHEN r.n % 11 = 5 THEN 0 ELSE (r.n * 13) % 120 END,
       c.name,
       CASE r.n % 4
         WHEN 0 THEN '[]'
         WHEN 1 THEN '["https://img.jollyjet.example/products/' || r.id || '/1.jpg"]'
         WHEN 2 THEN '["https://img.jollyjet.example/products/' || r.id || '/1.jpg",'
                  || '"https://img.jollyjet.example/products/' || r.id || '/2.jpg"]'
         ELSE '["https://img.jollyjet.example/products/' || r.id || '/1.jpg",'
           || '"https://img.jollyjet.example/products/' || r.id || '/2.jpg",'
           || '"https://img.jollyjet.example/products/' || r.id || '/3.jpg"]'
       END,
       CASE WHEN r.n % 9 = 8 THEN 0 ELSE 1 END,
       0,
       1,
       to_char(TIMESTAMP '2024-01-01 00:00:00' + make_interval(hours => r.n * 7),
               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
       to_char(TIMESTAMP '2024-01-01 00:00:00' + make_interval(hours => r.n * 7)
                 + make_interval(days => r.n % 30),
               'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
FROM rows r
JOIN adjectives a ON a.i = r.adj
JOIN categories c ON c.i = r.cat
JOIN nouns nn ON nn.cat = r.cat AND nn.i = r.noun
ORDER BY r.n
ON CONFLICT (id) DO NOTHING;
