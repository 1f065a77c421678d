-- migrate:up
-- The schema of romancy_nb on PostgreSQL: the tables and columns of the SQLite schema after
-- all its migrations (views, read_table and the notebook name them), plus what PostgreSQL
-- needs to run many workers at once. JSON stays TEXT, so values round-trip byte for byte;
-- times are Unix seconds (DOUBLE PRECISION), as on SQLite.

CREATE TABLE workers (
  worker_id    TEXT PRIMARY KEY,
  host         TEXT NOT NULL,
  pid          BIGINT NOT NULL,
  proc_start   TEXT,
  started_at   DOUBLE PRECISION NOT NULL,
  heartbeat_at DOUBLE PRECISION NOT NULL
);

-- One leader per database for each background role (the sweeps): whoever holds a role's row
-- and renews it before expires_at runs that role; anyone may take an expired row.
CREATE TABLE leaders (
  role       TEXT PRIMARY KEY,
  holder     TEXT NOT NULL,
  expires_at DOUBLE PRECISION NOT NULL
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
  created_at    DOUBLE PRECISION NOT NULL,
  updated_at    DOUBLE PRECISION NOT NULL,
  forked_from   TEXT,
  forked_at     TEXT
);
CREATE INDEX workflow_instances_by_created ON workflow_instances (created_at, instance_id);
CREATE INDEX workflow_instances_by_workflow ON workflow_instances (workflow_name, created_at);
CREATE INDEX workflow_instances_by_status ON workflow_instances (status, created_at);
CREATE INDEX workflow_instances_by_owner ON workflow_instances (lock_owner);
CREATE INDEX workflow_instances_cancel_requested ON workflow_instances (status)
  WHERE cancel_reason IS NOT NULL;
CREATE INDEX workflow_instances_by_parent ON workflow_instances (forked_from)
  WHERE forked_from IS NOT NULL;

-- find_instances matches the stored input with jsonb containment (this index) and then an
-- exact check of each path. A text PostgreSQL's jsonb cannot hold (a string with \u0000)
-- becomes NULL instead of failing the insert: such an input is never matched.
CREATE FUNCTION romancy_jsonb(document TEXT) RETURNS JSONB
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
BEGIN
  IF strpos(document, '\u0000') = 0 THEN
    RETURN document::jsonb;
  END IF;
  BEGIN  -- a subtransaction, only for the rare text that may fail
    RETURN document::jsonb;
  EXCEPTION WHEN untranslatable_character OR invalid_text_representation THEN
    RETURN NULL;
  END;
END $$;
CREATE INDEX workflow_instances_by_input ON workflow_instances
  USING gin (romancy_jsonb(input) jsonb_path_ops);

-- History in recording order: a load is one range of the primary key.
CREATE TABLE workflow_history (
  instance_id TEXT NOT NULL,
  seq         BIGINT NOT NULL,
  step_id     TEXT NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT,
  output      TEXT,
  error       TEXT,
  attempts    INTEGER NOT NULL DEFAULT 1,
  started_at  DOUBLE PRECISION NOT NULL,
  finished_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (instance_id, seq)
);

CREATE TABLE step_attempts (
  instance_id TEXT NOT NULL,
  step_id     TEXT NOT NULL,
  attempt     INTEGER NOT NULL,
  error       TEXT NOT NULL,
  at          DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (instance_id, step_id, attempt)
);

-- What a suspended instance waits on: one row per unanswered wait step (see SQLite's).
CREATE TABLE waits (
  instance_id TEXT NOT NULL,
  step_id     TEXT NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  input       TEXT,
  channel     TEXT,
  fire_at     DOUBLE PRECISION,
  created_at  DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (instance_id, step_id)
);
CREATE INDEX waits_by_fire_at ON waits (fire_at) WHERE fire_at IS NOT NULL;
CREATE INDEX waits_by_channel ON waits (channel, created_at) WHERE channel IS NOT NULL;

CREATE TABLE channel_subscriptions (
  instance_id TEXT NOT NULL,
  channel     TEXT NOT NULL,
  mode        TEXT NOT NULL,
  cursor      BIGINT NOT NULL DEFAULT 0,
  created_at  DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (instance_id, channel)
);
CREATE INDEX channel_subscriptions_by_channel ON channel_subscriptions (channel, mode);

-- Message ids come from this one-row counter, not a sequence: the insert that takes an id
-- keeps the row locked until it commits, so ids are committed in increasing order (with a
-- sequence a message could commit after one with a higher id, and a worker that saw the
-- higher id would never look for it), and last_id is the newest id committed.
CREATE TABLE channel_message_ids (
  one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
  last_id BIGINT NOT NULL
);
INSERT INTO channel_message_ids (last_id) VALUES (0);

CREATE TABLE channel_messages (
  id                 BIGINT PRIMARY KEY,
  message_id         TEXT NOT NULL,
  channel            TEXT NOT NULL,
  target_instance_id TEXT,
  data               TEXT NOT NULL,
  metadata           TEXT NOT NULL,
  sender_instance_id TEXT,
  created_at         DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX channel_messages_by_message_id ON channel_messages (channel, message_id);
CREATE INDEX channel_messages_by_channel ON channel_messages (channel, target_instance_id, id);
CREATE INDEX channel_messages_by_created ON channel_messages (created_at);

CREATE FUNCTION romancy_message_id() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  UPDATE channel_message_ids SET last_id = last_id + 1 RETURNING last_id INTO NEW.id;
  RETURN NEW;
END $$;
CREATE TRIGGER channel_messages_id BEFORE INSERT ON channel_messages
  FOR EACH ROW EXECUTE FUNCTION romancy_message_id();

CREATE TABLE group_members (
  group_name  TEXT NOT NULL,
  instance_id TEXT NOT NULL,
  joined_at   DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (group_name, instance_id)
);
CREATE INDEX group_members_by_instance ON group_members (instance_id);

-- Archived runs: recurred ones, and the steps cut off by time travel.
CREATE TABLE workflow_runs_archive (
  instance_id TEXT NOT NULL,
  run_no      INTEGER NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT NOT NULL,
  next_input  TEXT,
  steps       INTEGER NOT NULL,
  started_at  DOUBLE PRECISION NOT NULL,
  ended_at    DOUBLE PRECISION NOT NULL,
  cut_after   TEXT,
  PRIMARY KEY (instance_id, run_no)
);
CREATE INDEX workflow_runs_archive_by_ended ON workflow_runs_archive (ended_at);

CREATE TABLE workflow_history_archive (
  instance_id TEXT NOT NULL,
  run_no      INTEGER NOT NULL,
  seq         BIGINT NOT NULL,
  step_id     TEXT NOT NULL,
  kind        TEXT NOT NULL,
  name        TEXT NOT NULL,
  status      TEXT NOT NULL,
  input       TEXT,
  output      TEXT,
  error       TEXT,
  attempts    INTEGER NOT NULL,
  started_at  DOUBLE PRECISION NOT NULL,
  finished_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (instance_id, run_no, seq)
);

-- An instance that ends stops waiting, listening and belonging, in the same transaction as
-- its final status, whichever code path ended it.
CREATE FUNCTION romancy_end_waiting() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  DELETE FROM waits WHERE instance_id = NEW.instance_id;
  DELETE FROM channel_subscriptions WHERE instance_id = NEW.instance_id;
  DELETE FROM group_members WHERE instance_id = NEW.instance_id;
  RETURN NULL;
END $$;
CREATE TRIGGER workflow_instances_end_waiting AFTER UPDATE OF status ON workflow_instances
  FOR EACH ROW WHEN (NEW.status IN ('completed', 'failed', 'cancelled'))
  EXECUTE FUNCTION romancy_end_waiting();

-- Wake-ups: what may wake a worker is announced on the channel romancy_nb, inside the
-- writing transaction (so delivered when it commits), whichever code path wrote it:
-- 'm<id>' a new message, 't<fire_at>' a new timer, 'r' an instance that became runnable
-- (active with no lease holder), 'c' a cancellation request.
CREATE FUNCTION romancy_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_ARGV[0] = 'm' THEN
    PERFORM pg_notify('romancy_nb', 'm' || NEW.id);
  ELSIF TG_ARGV[0] = 't' THEN
    PERFORM pg_notify('romancy_nb', 't' || NEW.fire_at);
  ELSE
    PERFORM pg_notify('romancy_nb', TG_ARGV[0]);
  END IF;
  RETURN NULL;
END $$;
CREATE TRIGGER channel_messages_notify AFTER INSERT ON channel_messages
  FOR EACH ROW EXECUTE FUNCTION romancy_notify('m');
CREATE TRIGGER waits_notify AFTER INSERT ON waits
  FOR EACH ROW WHEN (NEW.fire_at IS NOT NULL) EXECUTE FUNCTION romancy_notify('t');
CREATE TRIGGER workflow_instances_created_runnable AFTER INSERT ON workflow_instances
  FOR EACH ROW WHEN (NEW.lock_owner IS NULL
    AND NEW.status IN ('running', 'compensating', 'rolling_back'))
  EXECUTE FUNCTION romancy_notify('r');
CREATE TRIGGER workflow_instances_became_runnable
  AFTER UPDATE OF lock_owner, status ON workflow_instances
  FOR EACH ROW WHEN (NEW.lock_owner IS NULL
    AND NEW.status IN ('running', 'compensating', 'rolling_back')
    AND (OLD.lock_owner IS NOT NULL
      OR OLD.status NOT IN ('running', 'compensating', 'rolling_back')))
  EXECUTE FUNCTION romancy_notify('r');
CREATE TRIGGER workflow_instances_cancel_asked AFTER UPDATE OF cancel_reason ON workflow_instances
  FOR EACH ROW WHEN (NEW.cancel_reason IS NOT NULL AND OLD.cancel_reason IS NULL)
  EXECUTE FUNCTION romancy_notify('c');

-- migrate:down
DROP TABLE workflow_history_archive;
DROP TABLE workflow_runs_archive;
DROP TABLE group_members;
DROP TABLE channel_messages;
DROP TABLE channel_message_ids;
DROP TABLE channel_subscriptions;
DROP TABLE waits;
DROP TABLE step_attempts;
DROP TABLE workflow_history;
DROP TABLE workflow_instances;
DROP TABLE leaders;
DROP TABLE workers;
DROP FUNCTION romancy_notify();
DROP FUNCTION romancy_end_waiting();
DROP FUNCTION romancy_message_id();
DROP FUNCTION romancy_jsonb(TEXT);
