-- When the reading of Altinn that a nightly reconcile last applied to the firm began. Two
-- reconciles of one firm on two replicas: the newer reading wins, and an older one that comes
-- to plan later is not applied over it (issue 16, step 7). Nullable with no default: adding it
-- does not rewrite the live table.
ALTER TABLE firms ADD COLUMN reconcile_read_at timestamptz;
