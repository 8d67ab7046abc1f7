-- The notifier's delivery ledger: one logical notification per (order, status), one delivery
-- per (order, status, channel), every attempt, and every provider receipt.

-- The logical message: its channels in policy order and the rendered words for each, so a
-- failover to the next channel needs nothing but this row.
CREATE TABLE notifications (
    notification_id    text PRIMARY KEY,
    order_id           text NOT NULL,
    customer_id        text NOT NULL,
    status             text NOT NULL,
    trigger            text NOT NULL,
    policy             text NOT NULL CHECK (policy IN ('all', 'failover')),
    chain              text[] NOT NULL,
    payloads           jsonb NOT NULL,
    vip                boolean NOT NULL,
    at                 timestamptz NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    reached_at         timestamptz,
    followup_due       timestamptz,
    followup_raised_at timestamptz,
    UNIQUE (order_id, status)
);
CREATE INDEX notifications_followup ON notifications (followup_due)
    WHERE followup_due IS NOT NULL AND reached_at IS NULL AND followup_raised_at IS NULL;

-- One message on one channel: created once (the primary key comes from order, status and
-- channel), sent by whichever worker claims it when due.
CREATE TABLE deliveries (
    message_id          text PRIMARY KEY,
    notification_id     text NOT NULL,
    order_id            text NOT NULL,
    status              text NOT NULL,
    channel             text NOT NULL,
    recipient           text NOT NULL,
    payload             jsonb NOT NULL,
    state               text NOT NULL CHECK (state IN ('pending', 'sent', 'delivered', 'failed')),
    provider            text,
    done                text[] NOT NULL DEFAULT '{}',
    attempts            integer NOT NULL DEFAULT 0,
    unknown             boolean NOT NULL DEFAULT false,
    tried_at            timestamptz,
    due_at              timestamptz,
    lease_until         timestamptz,
    provider_message_id text,
    reason              text NOT NULL DEFAULT '',
    timed_out           boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    final_at            timestamptz,
    UNIQUE (order_id, status, channel)
);
CREATE INDEX deliveries_due ON deliveries (due_at) WHERE state IN ('pending', 'sent');
CREATE INDEX deliveries_provider_id ON deliveries (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Every try, with what the provider said and, once a receipt (or its absence) says so,
-- whether it reached the customer: the delivery rate is counted here, from receipts.
CREATE TABLE attempts (
    message_id          text NOT NULL,
    attempt             integer NOT NULL,
    channel             text NOT NULL,
    provider            text NOT NULL,
    at                  timestamptz NOT NULL,
    accepted            boolean NOT NULL,
    code                text NOT NULL,
    failure             text,
    detail              text NOT NULL DEFAULT '',
    provider_message_id text,
    result              text NOT NULL CHECK (result IN ('pending', 'delivered', 'failed')),
    result_at           timestamptz,
    PRIMARY KEY (message_id, attempt)
);
CREATE INDEX attempts_by_time ON attempts (at);
CREATE INDEX attempts_provider_id ON attempts (provider, provider_message_id)
    WHERE provider_message_id IS NOT NULL;

-- Receipts as the providers pushed (or a send-detail query found) them; applied to their
-- delivery by the dispatcher, which may be before or after the send's answer was recorded.
CREATE TABLE receipts (
    provider            text NOT NULL,
    provider_message_id text NOT NULL,
    message_id          text,
    delivered           boolean NOT NULL,
    code                text NOT NULL,
    detail              text NOT NULL DEFAULT '',
    at                  timestamptz NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now(),
    applied_at          timestamptz,
    PRIMARY KEY (provider, provider_message_id)
);
CREATE INDEX receipts_unapplied ON receipts (received_at) WHERE applied_at IS NULL;

-- The consume loop's keyed state (shared/state.py): the projection of orders.submitted
-- (order_id -> contact, locale, zone, lines), and changes waiting for their order.
CREATE TABLE stream_state (
    name        text NOT NULL,
    key         text NOT NULL,
    value       jsonb NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, key)
);
CREATE INDEX stream_state_age ON stream_state (name, updated_at);
