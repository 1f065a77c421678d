-- migrate:up
-- The transactional outbox: CloudEvents that activities sent (ctx.send_event), written in
-- the transaction of the step that sent them, delivered by the relayer (engine/outbox.py)
-- at least once, in order per instance. seq orders them; claimed_by / claimed_until lease
-- a batch to one relayer, so a relayer that dies mid-delivery leaves them to the next.
CREATE TABLE outbox_events (
  seq             BIGSERIAL PRIMARY KEY,
  event_id        TEXT NOT NULL UNIQUE,
  instance_id     TEXT NOT NULL,
  step_id         TEXT NOT NULL,
  event_type      TEXT NOT NULL,
  data            TEXT NOT NULL,
  attributes      TEXT NOT NULL,
  created_at      DOUBLE PRECISION NOT NULL,
  status          TEXT NOT NULL DEFAULT 'pending',
  attempts        INTEGER NOT NULL DEFAULT 0,
  next_attempt_at DOUBLE PRECISION NOT NULL,
  last_error      TEXT,
  delivered_at    DOUBLE PRECISION,
  claimed_by      TEXT,
  claimed_until   DOUBLE PRECISION
);
CREATE INDEX outbox_events_pending ON outbox_events (instance_id, seq) WHERE status = 'pending';
CREATE INDEX outbox_events_by_instance ON outbox_events (instance_id, seq);

-- migrate:down
DROP TABLE outbox_events;
