-- A reconcile's reading is joined with desired_grants and applied_grants on the whole grant
-- key, firm by firm. With only (command_id, firm) indexed, a plan made while the table looked
-- empty (the statistics of a table refilled every night are easily out of date) compared every
-- applied grant with every grant read: a million comparisons a firm. With the whole key such a
-- plan probes the index once per grant instead. Unique: the worker reads each grant once.
DROP INDEX reconcile_actual_firm;
CREATE UNIQUE INDEX reconcile_actual_key
    ON reconcile_actual (command_id, firm, employee_id, client_org_number, package);
