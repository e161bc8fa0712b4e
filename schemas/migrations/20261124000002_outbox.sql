-- The flush to Altinn: what Altinn is known to hold, the changes on their way, and the audit.

-- Commands are handled once; NULL means still to do.
ALTER TABLE commands ADD COLUMN handled_at timestamptz, ADD COLUMN outcome text;
CREATE INDEX commands_unhandled ON commands (received_at) WHERE handled_at IS NULL;

-- Grants Altinn has confirmed, as far as this worker knows. The delta is desired − applied.
CREATE TABLE applied_grants (
    firm              text        NOT NULL,
    employee_id       uuid        NOT NULL,
    client_org_number text        NOT NULL,
    package           text        NOT NULL,
    applied_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id, client_org_number, package)
);

-- The employee's agent party in Altinn, from POST agents, so a person is looked up only once.
CREATE TABLE altinn_agents (
    firm        text        NOT NULL,
    employee_id uuid        NOT NULL,
    agent_party uuid        NOT NULL,
    added_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id)
);

-- One row per change to deliver. The generation makes a re-grant after a revoke a new row.
CREATE TABLE outbox (
    id                bigserial   PRIMARY KEY,
    firm              text        NOT NULL,
    employee_id       uuid        NOT NULL,
    client_org_number text        NOT NULL,
    package           text        NOT NULL,
    action            text        NOT NULL CHECK (action IN ('grant', 'revoke')),
    generation        bigint      NOT NULL,
    idempotency_key   text        NOT NULL UNIQUE,
    -- The command that planned it.
    cause             uuid        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'parked', 'superseded')),
    attempts          integer     NOT NULL DEFAULT 0,
    -- Persisted, so a restart neither resets nor loses the backoff.
    next_attempt_at   timestamptz NOT NULL DEFAULT now(),
    -- A claim by a dispatcher; a dead worker's claim runs out and the row is taken over.
    lease_until       timestamptz,
    leased_by         text,
    last_error        text,
    explanation       text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz
);
-- At most one open change per grant key.
CREATE UNIQUE INDEX outbox_open ON outbox (firm, employee_id, client_org_number, package)
    WHERE status = 'pending';
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE status = 'pending';
CREATE INDEX outbox_key ON outbox (firm, employee_id, client_org_number, package);

-- Every outcome of a delivery attempt: what, for whom, why, when, and Altinn's trace id.
CREATE TABLE audit (
    id                bigserial   PRIMARY KEY,
    firm              text        NOT NULL,
    employee_id       uuid        NOT NULL,
    client_org_number text        NOT NULL,
    package           text        NOT NULL,
    action            text        NOT NULL,
    outcome           text        NOT NULL,
    cause             uuid        NOT NULL,
    outbox_id         bigint      NOT NULL,
    detail            text,
    altinn_trace_id   text,
    at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_firm ON audit (firm, employee_id, at);
