-- The in-app inbox, one message per (order, status): the notification log for channel inapp.
CREATE TABLE inbox (
    message_id   text PRIMARY KEY,
    order_id     text NOT NULL,
    customer_id  text NOT NULL,
    status       text NOT NULL,
    title        text NOT NULL,
    body         text NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    read_at      timestamptz,
    UNIQUE (order_id, status)
);

CREATE INDEX inbox_customer ON inbox (customer_id, created_at DESC);
