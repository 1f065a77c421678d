-- migrate:up
-- What a suspended instance waits on: one row per unanswered wait step. A sleep has only
-- fire_at; a receive / wait_event has a channel, and fire_at when it has a timeout. The step
-- columns are what gets written to workflow_history when the wait ends, so any worker can
-- end it (a timer fired, a message arrived) without the workflow's code.
CREATE TABLE waits (
  instance_id TEXT NOT NULL,
  step_id     TEXT NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  input       TEXT,
  channel     TEXT,
  fire_at     REAL,
  created_at  REAL NOT NULL,
  PRIMARY KEY (instance_id, step_id)
) WITHOUT ROWID;
CREATE INDEX waits_by_fire_at ON waits (fire_at) WHERE fire_at IS NOT NULL;
CREATE INDEX waits_by_channel ON waits (channel, created_at) WHERE channel IS NOT NULL;

-- Who listens on a channel, and how. A broadcast subscriber reads every message after its
-- cursor (the last message id it saw; set to the newest id when it subscribes); competing and
-- direct messages are deleted by the one subscriber that takes them.
CREATE TABLE channel_subscriptions (
  instance_id TEXT NOT NULL,
  channel     TEXT NOT NULL,
  mode        TEXT NOT NULL,
  cursor      INTEGER NOT NULL DEFAULT 0,
  created_at  REAL NOT NULL,
  PRIMARY KEY (instance_id, channel)
) WITHOUT ROWID;
CREATE INDEX channel_subscriptions_by_channel ON channel_subscriptions (channel, mode);

-- Messages and events (an event is a broadcast message on the channel named by its type).
-- AUTOINCREMENT: ids never go back, so "newest id seen" is a safe change marker for the
-- watcher even after consumed messages are deleted.
CREATE TABLE channel_messages (
  id                 INTEGER PRIMARY KEY AUTOINCREMENT,
  message_id         TEXT NOT NULL,
  channel            TEXT NOT NULL,
  target_instance_id TEXT,
  data               TEXT NOT NULL,
  metadata           TEXT NOT NULL,
  sender_instance_id TEXT,
  created_at         REAL NOT NULL
);
CREATE UNIQUE INDEX channel_messages_by_message_id ON channel_messages (channel, message_id);
CREATE INDEX channel_messages_by_channel ON channel_messages (channel, target_instance_id, id);
CREATE INDEX channel_messages_by_created ON channel_messages (created_at);

CREATE TABLE group_members (
  group_name  TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  joined_at   REAL NOT NULL,
  PRIMARY KEY (group_name, instance_id)
) WITHOUT ROWID;
CREATE INDEX group_members_by_instance ON group_members (instance_id);

-- ctx.recur(): each finished run of an instance (status 'recurred') and its history.
CREATE TABLE workflow_runs_archive (
  instance_id TEXT NOT NULL,
  run_no      INTEGER NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT NOT NULL,
  next_input  TEXT,
  steps       INTEGER NOT NULL,
  started_at  REAL NOT NULL,
  ended_at    REAL NOT NULL,
  PRIMARY KEY (instance_id, run_no)
) WITHOUT ROWID;
CREATE INDEX workflow_runs_archive_by_ended ON workflow_runs_archive (ended_at);

CREATE TABLE workflow_history_archive (
  instance_id TEXT NOT NULL,
  run_no      INTEGER NOT NULL,
  step_id     TEXT NOT NULL,
  seq         INTEGER NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT,
  output      TEXT,
  error       TEXT,
  attempts    INTEGER NOT NULL,
  started_at  REAL NOT NULL,
  finished_at REAL NOT NULL,
  PRIMARY KEY (instance_id, run_no, step_id)
) WITHOUT ROWID;

-- An instance that ends stops waiting, listening and belonging, in the same transaction as
-- its final status, whichever code path ended it (completion, failure, cancellation).
CREATE TRIGGER workflow_instances_end_waiting
AFTER UPDATE OF status ON workflow_instances
WHEN NEW.status IN ('completed', 'failed', 'cancelled')
BEGIN
  DELETE FROM waits WHERE instance_id = NEW.instance_id;
  DELETE FROM channel_subscriptions WHERE instance_id = NEW.instance_id;
  DELETE FROM group_members WHERE instance_id = NEW.instance_id;
END;

-- migrate:down
DROP TRIGGER workflow_instances_end_waiting;
DROP TABLE workflow_history_archive;
DROP TABLE workflow_runs_archive;
DROP TABLE group_members;
DROP TABLE channel_messages;
DROP TABLE channel_subscriptions;
DROP TABLE waits;
