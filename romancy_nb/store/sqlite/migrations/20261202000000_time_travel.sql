-- migrate:up
-- Time travel (app.rewind / rollback / retry / fork). A fork remembers where it came from:
-- the instance it copied and the last step it copied. History cut off by a rewind, a
-- rollback, a retry or a divergence is never deleted: it becomes an archived run (like a
-- recurred one) whose status says why, and cut_after names the last step that was kept.
ALTER TABLE workflow_instances ADD COLUMN forked_from TEXT;
ALTER TABLE workflow_instances ADD COLUMN forked_at TEXT;
ALTER TABLE workflow_runs_archive ADD COLUMN cut_after TEXT;
CREATE INDEX workflow_instances_by_parent ON workflow_instances (forked_from)
  WHERE forked_from IS NOT NULL;

-- migrate:down
DROP INDEX workflow_instances_by_parent;
ALTER TABLE workflow_runs_archive DROP COLUMN cut_after;
ALTER TABLE workflow_instances DROP COLUMN forked_at;
ALTER TABLE workflow_instances DROP COLUMN forked_from;
