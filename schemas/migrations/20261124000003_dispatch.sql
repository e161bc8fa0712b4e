-- The dispatcher claims fairly across firms and pauses a firm whose system user Altinn refuses.

-- A firm-level refusal (403, system user not approved) pauses the firm's flush; other firms go
-- on. The pause lifts after `flush_paused_until`, on a SyncNow, or on `altinn-sync retry`.
ALTER TABLE firms
    ADD COLUMN flush_paused_at       timestamptz,
    ADD COLUMN flush_paused_until    timestamptz,
    ADD COLUMN flush_pause_reason    text,
    -- Altinn's hour-long lock-out after failed person lookups (429 AM-00026): no person is
    -- looked up for the firm before this, across restarts.
    ADD COLUMN agent_lookups_locked_until timestamptz;

-- Claims walk each firm's due rows in order (one index probe per firm), so one firm's backlog
-- cannot starve the others and a claim never sorts every pending row.
CREATE INDEX outbox_due_by_firm ON outbox (firm, next_attempt_at, id) WHERE status = 'pending';
DROP INDEX outbox_due;
-- Make before break: "is a grant on this client still open?" per claimed revoke.
CREATE INDEX outbox_open_grants ON outbox (firm, client_org_number)
    WHERE status = 'pending' AND action = 'grant';

-- When the person's identity last really changed (not merely re-sent): a grant parked because
-- Altinn could not match the person is retried once AdminFlow corrects it.
ALTER TABLE employee_identities ADD COLUMN identity_changed_at timestamptz NOT NULL DEFAULT now();

-- Removing idle agents (opt-in, REMOVE_IDLE_AGENTS): when to try next, and why a person was
-- left alone (Altinn refuses `cascade=false` while they hold packages this worker does not
-- manage).
ALTER TABLE altinn_agents
    ADD COLUMN removal_attempts integer NOT NULL DEFAULT 0,
    ADD COLUMN removal_due_at   timestamptz,
    ADD COLUMN kept_reason      text;

-- An agent's removal is audited too; it has no client, package or outbox row.
ALTER TABLE audit
    ALTER COLUMN client_org_number DROP NOT NULL,
    ALTER COLUMN package DROP NOT NULL,
    ALTER COLUMN cause DROP NOT NULL,
    ALTER COLUMN outbox_id DROP NOT NULL;

-- A nightly reconcile's reading of Altinn, one firm at a time, until the firm is planned.
-- Unlogged: a crash loses only a reading the next run takes again.
CREATE UNLOGGED TABLE reconcile_actual (
    command_id        uuid NOT NULL,
    firm              text NOT NULL,
    employee_id       uuid NOT NULL,
    client_org_number text NOT NULL,
    package           text NOT NULL
);
CREATE INDEX reconcile_actual_firm ON reconcile_actual (command_id, firm);

-- One unique index serves both the generation lookup and the idempotency key's uniqueness
-- (the key is made of exactly these columns), instead of a long text index beside a second
-- index on the grant key: filling the outbox after a full reconcile writes a million rows.
DROP INDEX outbox_key;
ALTER TABLE outbox DROP CONSTRAINT outbox_idempotency_key_key;
CREATE UNIQUE INDEX outbox_key
    ON outbox (firm, employee_id, client_org_number, package, generation, action);

-- What a dispatcher may claim now: due, not leased, and, make before break, no revoke while a
-- grant on the same client (a new project accountant's, say) has no final outcome.
CREATE VIEW outbox_claimable AS
SELECT o.id, o.firm, o.next_attempt_at
FROM outbox o
WHERE o.status = 'pending' AND o.next_attempt_at <= now()
  AND (o.lease_until IS NULL OR o.lease_until < now())
  AND NOT (o.action = 'revoke' AND EXISTS (
      SELECT 1 FROM outbox g
      WHERE g.firm = o.firm AND g.client_org_number = o.client_org_number
        AND g.action = 'grant' AND g.status = 'pending'));
