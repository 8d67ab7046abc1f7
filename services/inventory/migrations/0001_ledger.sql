-- Every stock movement, appended once (idempotent by movement_id), so on_hand and reserved
-- of any SKU can be recomputed from the ledger alone.
CREATE TABLE ledger (
    movement_id     text PRIMARY KEY,
    sku             text NOT NULL,
    kind            text NOT NULL,
    on_hand_delta   integer NOT NULL,
    reserved_delta  integer NOT NULL,
    order_id        text,
    line            integer,
    reason          text NOT NULL,
    source          text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX ledger_sku ON ledger (sku, occurred_at);
