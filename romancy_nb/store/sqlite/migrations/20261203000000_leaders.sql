-- migrate:up
-- One leader per database for each background role (the sweeps): whoever holds a role's
-- row and renews it before expires_at runs that role; anyone may take an expired row.
CREATE TABLE leaders (
  role       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at REAL NOT NULL
) WITHOUT ROWID;

-- migrate:down
DROP TABLE leaders;
