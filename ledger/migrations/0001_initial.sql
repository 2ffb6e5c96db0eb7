-- The ledger: accounts, transactions and their entries. Append-only and balanced, enforced here.
create schema if not exists ledger;

create table ledger.accounts (
    name text primary key,
    currency text not null check (currency ~ '^[a-z]{3}$'),
    created_at timestamptz not null default now()
);

create table ledger.transactions (
    id bigserial primary key,
    transaction_key text not null unique,
    kind text not null,
    cause_type text not null,
    cause_id text not null,
    effective_at timestamptz not null,
    posted_at timestamptz not null default now(),
    content_hash text not null,
    metadata jsonb not null default '{}'::jsonb
);
create index transactions_kind_cause on ledger.transactions (kind, cause_id);

create table ledger.entries (
    id bigserial primary key,
    transaction_id bigint not null references ledger.transactions (id),
    account text not null references ledger.accounts (name),
    amount_minor numeric(38, 12) not null,
    currency text not null check (currency ~ '^[a-z]{3}$')
);
create index entries_transaction on ledger.entries (transaction_id);
create index entries_account on ledger.entries (account, currency);

-- Corrections are new transactions: nothing posted is ever changed or removed.
create function ledger.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'ledger.% is append-only: % is not allowed; post a correcting transaction',
        tg_table_name, tg_op using errcode = 'P0001';
end
$$;
create trigger transactions_append_only before update or delete or truncate
    on ledger.transactions for each statement execute function ledger.refuse_change();
create trigger entries_append_only before update or delete or truncate
    on ledger.entries for each statement execute function ledger.refuse_change();

-- At commit, every transaction touched has at least two entries that sum to zero per currency.
create function ledger.check_balanced() returns trigger language plpgsql as $$
declare
    entry_count integer;
    unbalanced_currency text;
begin
    select count(*) into entry_count from ledger.entries where transaction_id = new.transaction_id;
    if entry_count < 2 then
        raise exception 'ledger transaction % has % entries; a transaction needs at least two',
            new.transaction_id, entry_count;
    end if;
    select currency into unbalanced_currency from ledger.entries
        where transaction_id = new.transaction_id
        group by currency having sum(amount_minor) <> 0 limit 1;
    if unbalanced_currency is not null then
        raise exception 'ledger transaction % does not balance in %',
            new.transaction_id, unbalanced_currency;
    end if;
    return null;
end
$$;
create constraint trigger entries_balanced after insert on ledger.entries
    deferrable initially deferred for each row execute function ledger.check_balanced();
