-- A setup error one replica met (Altinn's 403 on every firm, Maskinporten refusing the client):
-- every replica holds its deliveries until the probe of the one that recorded it, instead of
-- each sending its own round of calls that are bound to fail. One row at most; a new table, so
-- safe on a live database.
CREATE TABLE IF NOT EXISTS setup_holds (
    held        boolean     PRIMARY KEY DEFAULT true CHECK (held),
    reason      text        NOT NULL,
    forbidden   boolean     NOT NULL,
    until       timestamptz NOT NULL,
    recorded_by text        NOT NULL,
    since       timestamptz NOT NULL DEFAULT now()
);
