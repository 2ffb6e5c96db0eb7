-- Accounts get a normal side and an overdraft rule, and never change once opened. An entry's
-- currency is its account's. A transaction is sealed when its database transaction commits: it
-- has at least two entries balancing per currency, and no entry can be added to it later.

alter table ledger.accounts
    add column normal_side text not null default 'debit'
        check (normal_side in ('debit', 'credit')),
    add column must_not_go_negative boolean not null default false,
    add constraint accounts_name_length check (char_length(name) between 1 and 255),
    add constraint accounts_name_currency unique (name, currency);

create or replace function ledger.refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'ledger.% is append-only: % is not allowed; a correction is a new '
        'transaction, and an account never changes once opened', tg_table_name, tg_op
        using errcode = 'P0001';
end
$$;
create trigger accounts_append_only before update or delete or truncate
    on ledger.accounts for each statement execute function ledger.refuse_change();

alter table ledger.entries
    drop constraint entries_account_fkey,
    add constraint entries_account_currency_fkey foreign key (account, currency)
        references ledger.accounts (name, currency);

alter table ledger.transactions
    add constraint transactions_key_length check (char_length(transaction_key) between 1 and 255),
    add constraint transactions_content_hash_sha256 check (content_hash ~ '^[0-9a-f]{64}$');

-- Replaced by the two triggers below: one check per transaction, one per entry.
drop trigger entries_balanced on ledger.entries;
drop function ledger.check_balanced();

-- At commit, once per transaction row: at least two entries, summing to zero per currency.
create function ledger.check_transaction_balanced() returns trigger language plpgsql as $$
declare
    entry_count bigint;
    unbalanced_currency text;
begin
    select coalesce(sum(currency_entries), 0), min(currency) filter (where currency_sum <> 0)
        into entry_count, unbalanced_currency
        from (
            select currency, count(*) as currency_entries, sum(amount_minor) as currency_sum
            from ledger.entries where transaction_id = new.id group by currency
        ) per_currency;
    if entry_count < 2 then
        raise exception 'ledger transaction % has % entries; a transaction needs at least two',
            new.transaction_key, entry_count
            using errcode = 'check_violation', constraint = 'transactions_balanced';
    end if;
    if unbalanced_currency is not null then
        raise exception 'ledger transaction % does not balance in %',
            new.transaction_key, unbalanced_currency
            using errcode = 'check_violation', constraint = 'transactions_balanced';
    end if;
    return null;
end
$$;
create constraint trigger transactions_balanced after insert on ledger.transactions
    deferrable initially deferred for each row execute function ledger.check_transaction_balanced();

-- At commit, once per entry: it was written by the same database transaction as its transaction
-- row (so a posted transaction cannot gain entries), and a guarded account is not overdrawn.
create function ledger.check_entry() returns trigger language plpgsql as $$
declare
    sealed_elsewhere boolean;
    account_side text;
    guarded boolean;
    account_balance numeric;
begin
    select e.xmin <> t.xmin, a.normal_side, a.must_not_go_negative
        into sealed_elsewhere, account_side, guarded
        from ledger.entries e
        join ledger.transactions t on t.id = e.transaction_id
        join ledger.accounts a on a.name = e.account
        where e.id = new.id;
    if sealed_elsewhere then
        raise exception 'ledger entry % adds to transaction %, which was posted before; '
            'post a correcting transaction instead', new.id, new.transaction_id
            using errcode = 'check_violation', constraint = 'entries_sealed';
    end if;
    if not guarded then
        return null;
    end if;
    -- Serialise writers of a guarded account, then read what they committed.
    perform 1 from ledger.accounts where name = new.account for no key update;
    select coalesce(sum(amount_minor), 0) into account_balance
        from ledger.entries where account = new.account;
    if (account_side = 'debit' and account_balance < 0)
            or (account_side = 'credit' and account_balance > 0) then
        raise exception 'ledger account % must not go negative: its % balance would be %',
            new.account, account_side,
            case account_side when 'debit' then account_balance else -account_balance end
            using errcode = 'check_violation', constraint = 'accounts_must_not_go_negative';
    end if;
    return null;
end
$$;
create constraint trigger entries_checked after insert on ledger.entries
    deferrable initially deferred for each row execute function ledger.check_entry();
