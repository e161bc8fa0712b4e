-- The admin API's reads stay index-driven however long a firm's history grows, so one firm's
-- token cannot make PostgreSQL sort or scan every firm's rows (issue 16, step 9).

-- An audit page: a firm's newest rows first, from a cursor (`id < before`).
CREATE INDEX audit_firm_id ON audit (firm, id);

-- A sync's summary counts the changes its command planned (`o.cause = c.command_id AND
-- o.firm = $1`); before, it scanned the firm's whole outbox for each summary.
CREATE INDEX outbox_cause ON outbox (firm, cause);

-- The parked list, newest first, per firm or over all firms.
CREATE INDEX outbox_parked ON outbox (firm, finished_at DESC, id DESC) WHERE status = 'parked';
CREATE INDEX outbox_parked_all ON outbox (finished_at DESC, id DESC) WHERE status = 'parked';
