-- Current status per order, and the append-only history of its changes (UTC instants).
CREATE TABLE orders (
    order_id          text PRIMARY KEY,
    channel           text NOT NULL,
    channel_order_id  text NOT NULL,
    customer_id       text NOT NULL,
    status            text NOT NULL,
    status_since      timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE status_history (
    event_id        text PRIMARY KEY,
    order_id        text NOT NULL,
    from_status     text,
    to_status       text NOT NULL,
    at              timestamptz NOT NULL,
    cause_event_id  text NOT NULL,
    detail          text NOT NULL DEFAULT ''
);

CREATE INDEX status_history_order ON status_history (order_id, at);
CREATE INDEX orders_status ON orders (status, status_since);
