-- Guard rails: the mass-revoke guard's staged revokes and who released or dropped them, who
-- did each audited action, and the automatic sync's record of changed desired grants.

-- A staged revoke is held by the mass-revoke guard until an operator approves (back to
-- pending, approved_by set: the guard never stages it again) or rejects it (superseded,
-- rejected_by set: a revoke planned again for the key is staged again).
ALTER TABLE outbox DROP CONSTRAINT outbox_status_check;
ALTER TABLE outbox
    ADD CONSTRAINT outbox_status_check
        CHECK (status IN ('pending', 'delivered', 'parked', 'superseded', 'staged')),
    ADD COLUMN staged_at   timestamptz,
    ADD COLUMN approved_by text,
    ADD COLUMN approved_at timestamptz,
    ADD COLUMN rejected_by text;
CREATE INDEX outbox_staged ON outbox (firm, id) WHERE status = 'staged';
-- The guard counts a firm's revokes delivered in the last 24 hours.
CREATE INDEX outbox_recent_revokes ON outbox (firm, finished_at)
    WHERE action = 'revoke' AND status = 'delivered';

-- Who did it: an admin token's name, or the worker itself.
ALTER TABLE audit ADD COLUMN actor text DEFAULT 'worker';

-- The automatic sync (AUTO_SYNC_AFTER_SECS): when a firm's desired grants first and last
-- changed since its last plan, set by ingest in the batch's transaction. `desired_changes`
-- counts the changes, so a plan clears the marks only if nothing changed while it planned.
-- Not indexed: an index would make every batch's update of the firm non-HOT, and the due
-- check reads a table of one row per firm.
ALTER TABLE firms
    ADD COLUMN desired_changed_first timestamptz,
    ADD COLUMN desired_changed_last  timestamptz,
    ADD COLUMN desired_changes       bigint NOT NULL DEFAULT 0;

-- The kill switch (REVOKES_ENABLED=false) leaves revokes unclaimed: the view names the action.
CREATE OR REPLACE VIEW outbox_claimable AS
SELECT o.id, o.firm, o.next_attempt_at, o.created_at,
       o.action = 'revoke' AND EXISTS (
           SELECT 1 FROM project_accountants pa
           JOIN outbox g ON g.firm = pa.firm AND g.client_org_number = pa.client_org_number
                        AND g.employee_id = pa.employee_id
           WHERE pa.firm = o.firm AND pa.client_org_number = o.client_org_number
             AND pa.employee_id <> o.employee_id
             AND g.action = 'grant' AND g.status = 'pending') AS revoke_waits,
       o.action
FROM outbox o
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND (o.lease_until IS NULL OR o.lease_until < now())
  AND (o.generation = 1 OR o.generation = (
      SELECT min(e.generation) FROM outbox e
      WHERE e.firm = o.firm AND e.employee_id = o.employee_id
        AND e.client_org_number = o.client_org_number AND e.package = o.package
        AND e.status = 'pending'));
