-- Orders as ingestion accepted them. Every instant is timestamptz (UTC inside).
CREATE TABLE orders (
    order_id          text PRIMARY KEY,
    channel           text NOT NULL,
    channel_order_id  text NOT NULL,
    customer_id       text NOT NULL,
    currency          char(3) NOT NULL,
    total             numeric(18, 4) NOT NULL,
    paid              boolean NOT NULL,
    placed_at         timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    event_id          text NOT NULL,
    UNIQUE (channel, channel_order_id)
);

CREATE TABLE order_lines (
    order_id    text NOT NULL REFERENCES orders (order_id),
    line        integer NOT NULL CHECK (line > 0),
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(18, 4) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, line)
);

CREATE INDEX orders_placed_at ON orders (placed_at);
