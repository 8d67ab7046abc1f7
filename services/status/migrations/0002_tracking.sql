-- What the query API, the carrier poller and the stale-order monitor read. The Faust table
-- is the order's authority; these rows follow it, never moving back to an older version.
ALTER TABLE orders
    ADD COLUMN version          integer NOT NULL DEFAULT 0,
    ADD COLUMN paid             boolean NOT NULL DEFAULT false,
    ADD COLUMN placed_at        timestamptz,
    ADD COLUMN carrier          text,
    ADD COLUMN tracking_number  text,
    ADD COLUMN last_scan_at     timestamptz,
    ADD COLUMN last_news_at     timestamptz,
    -- the carrier poller asks about the parcel from then on (NULL: nothing to poll)
    ADD COLUMN next_poll_at     timestamptz,
    ADD COLUMN poll_attempts    integer NOT NULL DEFAULT 0,
    ADD COLUMN last_poll_at     timestamptz,
    ADD COLUMN last_poll_error  text,
    -- stale from then on (NULL: no deadline in this status); alerts raised while stale
    ADD COLUMN deadline_at      timestamptz,
    ADD COLUMN alerted_at       timestamptz,
    ADD COLUMN alerts           integer NOT NULL DEFAULT 0;

CREATE INDEX orders_next_poll ON orders (next_poll_at) WHERE next_poll_at IS NOT NULL;
CREATE INDEX orders_deadline ON orders (deadline_at) WHERE deadline_at IS NOT NULL;
CREATE INDEX orders_channel_status ON orders (channel, status);
CREATE INDEX orders_tracking ON orders (tracking_number) WHERE tracking_number IS NOT NULL;

-- A history row is a status change (applied) or an input kept for audit that changed
-- nothing: a late scan, a refused cancellation, a payment for a cancelled order.
ALTER TABLE status_history
    ADD COLUMN applied          boolean NOT NULL DEFAULT true,
    ADD COLUMN reported         text,
    ADD COLUMN tracking_number  text,
    ADD COLUMN recorded_at      timestamptz NOT NULL DEFAULT now(),
    -- the order rows were written in: the order the service applied its inputs in
    ADD COLUMN seq              bigint GENERATED ALWAYS AS IDENTITY;

-- Every warehouse and carrier event taken in, whichever way it came (callback, poll, WMS).
CREATE TABLE carrier_events (
    event_id         text PRIMARY KEY,
    order_id         text NOT NULL,
    event_type       text NOT NULL,
    source           text NOT NULL,
    via              text NOT NULL,  -- callback | poll | wms
    carrier          text,
    tracking_number  text,
    location         text,
    detail           text NOT NULL DEFAULT '',
    scanned_at       timestamptz,
    received_at      timestamptz NOT NULL,
    recorded_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX carrier_events_order ON carrier_events (order_id, scanned_at);

-- News for orders not submitted (yet): alerted on when it waits too long.
CREATE TABLE waiting_orders (
    order_id    text PRIMARY KEY,
    since       timestamptz NOT NULL,
    events      integer NOT NULL,
    alerted_at  timestamptz
);
