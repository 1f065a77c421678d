-- migrate:up
CREATE TABLE workers (
  worker_id    TEXT PRIMARY KEY,
  host         TEXT NOT NULL,
  pid          INTEGER NOT NULL,
  proc_start   TEXT,
  started_at   REAL NOT NULL,
  heartbeat_at REAL NOT NULL
);

CREATE TABLE workflow_instances (
  instance_id   TEXT PRIMARY KEY,
  workflow_name TEXT NOT NULL,
  status        TEXT NOT NULL,
  input         TEXT NOT NULL,
  output        TEXT,
  error         TEXT,
  lock_owner    TEXT,
  cancel_reason TEXT,
  code_version  TEXT,
  created_at    REAL NOT NULL,
  updated_at    REAL NOT NULL
);
CREATE INDEX workflow_instances_by_created ON workflow_instances (created_at, instance_id);
CREATE INDEX workflow_instances_by_workflow ON workflow_instances (workflow_name, created_at);
CREATE INDEX workflow_instances_by_status ON workflow_instances (status, created_at);
CREATE INDEX workflow_instances_by_owner ON workflow_instances (lock_owner);

CREATE TABLE workflow_history (
  instance_id TEXT NOT NULL,
  step_id     TEXT NOT NULL,
  seq         INTEGER NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT,
  output      TEXT,
  error       TEXT,
  attempts    INTEGER NOT NULL DEFAULT 1,
  started_at  REAL NOT NULL,
  finished_at REAL NOT NULL,
  PRIMARY KEY (instance_id, step_id)
) WITHOUT ROWID;

CREATE TABLE step_attempts (
  instance_id TEXT NOT NULL,
  step_id     TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  error       TEXT NOT NULL,
  at          REAL NOT NULL,
  PRIMARY KEY (instance_id, step_id, attempt)
) WITHOUT ROWID;

-- migrate:down
DROP TABLE step_attempts;
DROP TABLE workflow_history;
DROP TABLE workflow_instances;
DROP TABLE workers;
