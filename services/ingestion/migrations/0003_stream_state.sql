-- The consume loop's keyed state (shared/state.py): one JSON value per key, written once per
-- batch after the batch's outputs are acknowledged.
CREATE TABLE stream_state (
    name        text NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
);
