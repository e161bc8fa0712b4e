-- What each running worker does, refreshed with its gauges: the CLI, run elsewhere without the
-- worker's settings, reads it to say whether access is sent to Altinn and whether revokes are
-- held by the kill switch.
CREATE TABLE worker_modes (
    worker          text        PRIMARY KEY,
    flush_on        boolean     NOT NULL,
    revokes_enabled boolean     NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT now()
);
