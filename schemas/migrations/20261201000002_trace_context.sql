-- W3C trace context (`traceparent`), so that one sync can be followed from AdminFlow's message
-- to the Altinn call in a trace viewer.

-- The `traceparent` header the command arrived with: handling it, later or on another replica,
-- continues AdminFlow's trace.
ALTER TABLE commands ADD COLUMN traceparent text;

-- The trace context of the command that planned the change: its delivery, later or on another
-- replica, joins that trace. Planning sets `altinn_sync.traceparent` for its transaction
-- (`set_config(..., true)`), so every statement that plans a change records it without naming it.
ALTER TABLE outbox
    ADD COLUMN traceparent text
        DEFAULT nullif(current_setting('altinn_sync.traceparent', true), '');
