-- migrate:up
-- The sweep looks for waiting instances whose cancellation another process recorded; this
-- index holds only instances with a cancel request, so that look-up stays tiny however many
-- instances wait.
CREATE INDEX workflow_instances_cancel_requested ON workflow_instances (status)
  WHERE cancel_reason IS NOT NULL;

-- migrate:down
DROP INDEX workflow_instances_cancel_requested;
