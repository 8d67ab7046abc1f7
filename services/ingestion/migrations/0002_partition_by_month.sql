-- Orders and lines partitioned by month of placed_at (UTC month boundaries), so old months
-- can be moved out of the hot tables whole. Partitions are created on demand by the
-- service before it writes into a month; the default partition only catches what nothing
-- else would. Archived months move to orders_archive / order_lines_archive and stay
-- queryable through the all_orders view.
ALTER TABLE order_lines RENAME TO order_lines_v1;
ALTER TABLE orders RENAME TO orders_v1;
DROP INDEX orders_placed_at;  -- 0001's index keeps its name through the rename

CREATE TABLE orders (
    order_id          text NOT NULL,
    channel           text NOT NULL,
    channel_order_id  text NOT NULL,
    customer_id       text NOT NULL,
    currency          char(3) NOT NULL,
    total             numeric(18, 4) NOT NULL,
    payment           text NOT NULL CHECK (payment IN ('unpaid', 'paid', 'cancelled')),
    placed_at         timestamptz NOT NULL,
    received_at       timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    event_id          text NOT NULL,
    PRIMARY KEY (order_id, placed_at)
) PARTITION BY RANGE (placed_at);

CREATE TABLE order_lines (
    order_id    text NOT NULL,
    placed_at   timestamptz NOT NULL,
    line        integer NOT NULL CHECK (line > 0),
    sku         text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    unit_price  numeric(18, 4) NOT NULL CHECK (unit_price >= 0),
    PRIMARY KEY (order_id, placed_at, line)
) PARTITION BY RANGE (placed_at);

CREATE TABLE orders_default PARTITION OF orders DEFAULT;
CREATE TABLE order_lines_default PARTITION OF order_lines DEFAULT;
CREATE INDEX orders_placed_at ON orders (placed_at);
CREATE INDEX orders_channel_order ON orders (channel, channel_order_id);

INSERT INTO orders (order_id, channel, channel_order_id, customer_id, currency, total, payment,
                    placed_at, received_at, updated_at, event_id)
SELECT order_id, channel, channel_order_id, customer_id, currency, total,
       CASE WHEN paid THEN 'paid' ELSE 'unpaid' END, placed_at, received_at, received_at,
       event_id
FROM orders_v1;
INSERT INTO order_lines (order_id, placed_at, line, sku, quantity, unit_price)
SELECT l.order_id, o.placed_at, l.line, l.sku, l.quantity, l.unit_price
FROM order_lines_v1 l JOIN orders_v1 o USING (order_id);
DROP TABLE order_lines_v1;
DROP TABLE orders_v1;

CREATE TABLE orders_archive (LIKE orders INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (placed_at);
CREATE TABLE order_lines_archive (LIKE order_lines INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY RANGE (placed_at);

CREATE VIEW all_orders AS
    SELECT *, false AS archived FROM orders
    UNION ALL
    SELECT *, true AS archived FROM orders_archive;
