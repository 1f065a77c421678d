-- migrate:up
-- The trace context an instance's runs continue (W3C traceparent/tracestate as a JSON
-- object, written by App(hooks=...) such as OpenTelemetryHooks when the instance starts):
-- a run resumed later, maybe in another process, joins the same trace.
ALTER TABLE workflow_instances ADD COLUMN trace_context TEXT;

-- migrate:down
ALTER TABLE workflow_instances DROP COLUMN trace_context;
