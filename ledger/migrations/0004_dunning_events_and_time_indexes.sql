-- Payment collection outside the money movements: a failed payment moves no money (the
-- receivable stays open) but its dunning state must be on record. Append-only, like the rest.
create table ledger.dunning_events (
    id bigserial primary key,
    event_key text not null unique check (char_length(event_key) between 1 and 255),
    invoice_id text not null,
    customer_id text not null,
    state text not null check (state in (
        'payment_failed', 'retry_scheduled', 'recovered', 'uncollectible')),
    attempt integer not null check (attempt >= 0),
    occurred_at timestamptz not null,
    recorded_at timestamptz not null default now(),
    detail jsonb not null default '{}'::jsonb
);
create index dunning_events_invoice on ledger.dunning_events (invoice_id, occurred_at);
create trigger dunning_events_append_only before update or delete or truncate
    on ledger.dunning_events for each statement execute function ledger.refuse_change();

-- Balances as of a business time (effective_at) or a system time (posted_at), and a pipeline
-- run reading only the usage dates it touches.
create index transactions_kind_effective on ledger.transactions (kind, effective_at);
create index transactions_posted on ledger.transactions (posted_at);
