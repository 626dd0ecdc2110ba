-- The existing schema the lint corpus's header describes, where a label depends on it (the
-- types of the columns whose type the corpus changes), with enough rows that no table is
-- "small". `lint_vs_squawk.py --with-database` loads it into a scratch PostgreSQL and lints with
-- --dsn, so that dbmigrate knows what squawk cannot: the column's current type.
CREATE TABLE users (
  id bigint PRIMARY KEY,
  email varchar(255),
  name varchar(100),
  status text,
  score integer,
  created_at timestamptz,
  bio text
);
CREATE INDEX users_email_idx ON users (email);
INSERT INTO users
SELECT g, 'u' || g || '@example.com', 'user ' || g, 'active', g % 100, now(), NULL
FROM generate_series(1, 100000) AS g;

CREATE TABLE orders (
  id bigint PRIMARY KEY,
  total numeric,
  amount numeric(12,2),
  note varchar(255),
  status text,
  created_at timestamptz
);
INSERT INTO orders
SELECT g, g * 1.5, (g % 10000) / 100.0, NULL, 'paid', now() FROM generate_series(1, 100000) AS g;

ANALYZE users;
ANALYZE orders;
