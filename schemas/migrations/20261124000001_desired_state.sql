-- Desired state: the facts AdminFlow told us, each guarded by the sequence that last changed it,
-- and the access they imply. Every table is keyed by firm first, so one firm's events can only
-- ever reach that firm's rows. Fact tables are rewritten in place by most events; free space
-- in each page (fillfactor 70) keeps those updates HOT, without new index entries.

-- One row per firm; the row lock serialises batches that touch the same firm across replicas.
-- The fact tables carry no foreign key to it: every batch creates its firms first, and a
-- per-row key check would cost more than the rest of the upsert.
CREATE TABLE firms (
    org_number          text        PRIMARY KEY,
    high_water_sequence bigint      NOT NULL,
    -- Set when a sequence regression is detected: the firm's events are dead-lettered, not
    -- applied, until an operator runs `altinn-sync resequence`.
    held_since          timestamptz,
    first_seen_at       timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);

-- The only place national identity numbers are stored.
CREATE TABLE employee_identities (
    firm                     text        NOT NULL,
    employee_id              uuid        NOT NULL,
    national_identity_number text        NOT NULL,
    last_name                text        NOT NULL,
    sequence                 bigint      NOT NULL,
    updated_at               timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id)
) WITH (fillfactor = 70);

CREATE TABLE employee_roles (
    firm        text        NOT NULL,
    employee_id uuid        NOT NULL,
    roles       text[]      NOT NULL,
    sequence    bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id)
) WITH (fillfactor = 70);

-- active = false is a tombstone: it keeps the removal's sequence so a late, older
-- ClientAssigned cannot bring access back. Tombstones are pruned after the retention period,
-- by an hourly scan: an index on updated_at would make every update non-HOT.
CREATE TABLE assignments (
    firm              text        NOT NULL,
    employee_id       uuid        NOT NULL,
    client_org_number text        NOT NULL,
    active            boolean     NOT NULL,
    sequence          bigint      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id, client_org_number)
) WITH (fillfactor = 70);

CREATE TABLE clients (
    firm       text        NOT NULL,
    org_number text        NOT NULL,
    name       text        NOT NULL,
    sequence   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, org_number)
) WITH (fillfactor = 70);

-- The project-accountant slot; employee_id NULL means the slot is empty.
CREATE TABLE project_accountants (
    firm              text        NOT NULL,
    client_org_number text        NOT NULL,
    employee_id       uuid,
    sequence          bigint      NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, client_org_number)
) WITH (fillfactor = 70);
CREATE INDEX project_accountants_employee ON project_accountants (firm, employee_id);

CREATE TABLE processed_events (
    firm         text        NOT NULL,
    event_id     uuid        NOT NULL,
    event_type   text        NOT NULL,
    sequence     bigint      NOT NULL,
    occurred_at  timestamptz NOT NULL,
    -- clock_timestamp(), not now(): the benchmark reads publish-to-commit latency from it.
    processed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (firm, event_id)
);
-- Insert-only and in time order: BRIN serves pruning at almost no cost per insert.
CREATE INDEX processed_events_age ON processed_events USING brin (processed_at);

CREATE TABLE commands (
    command_id      uuid        PRIMARY KEY,
    command_type    text        NOT NULL,
    -- NULL only for a NightlyReconcile of every firm.
    firm            text,
    requested_at    timestamptz NOT NULL,
    requested_by    text,
    after_sequence  bigint,
    received_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX commands_firm ON commands (firm, received_at);

-- What went to the dead-letter queue and why. The body itself stays in the queue: it may hold
-- identity numbers, which live only in employee_identities.
CREATE TABLE dead_letters (
    id           bigserial   PRIMARY KEY,
    queue        text        NOT NULL,
    routing_key  text        NOT NULL,
    message_id   text,
    firm         text,
    reason_code  text        NOT NULL,
    reason       text        NOT NULL,
    body_bytes   integer     NOT NULL,
    redelivered  boolean     NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_firm ON dead_letters (firm, received_at);

-- Events far below a firm's high-water mark: AdminFlow was probably restored from backup.
CREATE TABLE sequence_regressions (
    id                  bigserial   PRIMARY KEY,
    firm                text        NOT NULL,
    event_id            uuid        NOT NULL,
    sequence            bigint      NOT NULL,
    high_water_sequence bigint      NOT NULL,
    detected_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sequence_regressions_firm ON sequence_regressions (firm, detected_at);

-- The mapping desired_grants was built with; the worker rebuilds when its configuration differs.
CREATE TABLE role_mapping (
    role    text PRIMARY KEY,
    package text NOT NULL
);

CREATE TABLE desired_grants (
    firm              text        NOT NULL,
    employee_id       uuid        NOT NULL,
    client_org_number text        NOT NULL,
    package           text        NOT NULL,
    since             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (firm, employee_id, client_org_number, package)
);

-- What the facts imply, computed from scratch. Used to rebuild desired_grants and, in tests, to
-- check that the incremental maintenance never drifts from it.
CREATE VIEW desired_grants_expected AS
SELECT DISTINCT w.firm, w.employee_id, w.client_org_number, m.package
FROM (
    SELECT firm, employee_id, client_org_number FROM assignments WHERE active
    UNION
    SELECT firm, employee_id, client_org_number FROM project_accountants WHERE employee_id IS NOT NULL
) w
JOIN employee_roles r ON r.firm = w.firm AND r.employee_id = w.employee_id
JOIN role_mapping m ON m.role = ANY (r.roles);
