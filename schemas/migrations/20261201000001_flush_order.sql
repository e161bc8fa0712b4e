-- A change may be planned while an earlier one for the same grant is still being delivered: a
-- removal while the grant is in flight plans its revoke at once, behind the grant. So a grant
-- key has at most one open grant and one open revoke, delivered in the order they were planned.
DROP INDEX outbox_open;
CREATE UNIQUE INDEX outbox_open
    ON outbox (firm, employee_id, client_org_number, package, action)
    WHERE status = 'pending';

-- What a dispatcher may claim now: due, not leased, and the oldest open change of its grant
-- key. `revoke_waits` is make before break: a revoke while the client's project accountant
-- (another employee) still has a grant on the client on its way. The claim lets such a revoke
-- wait at most MAKE_BEFORE_BREAK_MAX_SECS.
DROP VIEW outbox_claimable;
CREATE VIEW outbox_claimable AS
SELECT o.id, o.firm, o.next_attempt_at, o.created_at,
       o.action = 'revoke' AND EXISTS (
           SELECT 1 FROM project_accountants pa
           JOIN outbox g ON g.firm = pa.firm AND g.client_org_number = pa.client_org_number
                        AND g.employee_id = pa.employee_id
           WHERE pa.firm = o.firm AND pa.client_org_number = o.client_org_number
             AND pa.employee_id <> o.employee_id
             AND g.action = 'grant' AND g.status = 'pending') AS revoke_waits
FROM outbox o
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND (o.lease_until IS NULL OR o.lease_until < now())
  -- The key's first open change. A first generation has nothing before it, which spares most
  -- rows the probe; for the others it is one short index probe on the whole key. (Written as
  -- NOT EXISTS, PostgreSQL scanned every open change of the firm for each row.)
  AND (o.generation = 1 OR o.generation = (
      SELECT min(e.generation) FROM outbox e
      WHERE e.firm = o.firm AND e.employee_id = o.employee_id
        AND e.client_org_number = o.client_org_number AND e.package = o.package
        AND e.status = 'pending'));
