-- The same guarantees as 0003, checked with fewer index lookups per posted row, so a batch of
-- 100,000 entries costs its checks a few ordered passes instead of one lookup per row in each
-- check:
-- - per entries statement, each distinct transaction is looked up once (not once per entry),
--   by one ordered scan, and the guarded accounts the statement touched are noted for commit;
-- - at commit, the database transaction's ledger transactions, their reversal links and their
--   entries are read in one pass, and only the guarded accounts noted are locked and summed.

-- Nothing filters on (kind, cause_id) alone: cause totals read a kind's rows by
-- (kind, effective_at) or all of them. One index fewer to maintain per posted transaction.
drop index ledger.transactions_kind_cause;

-- Guarded accounts touched by the open database transaction's entries, noted per statement.
alter table ledger.pending_checks
    add column guarded_accounts text[] not null default '{}';

-- Immediately, per statement: each entry's transaction exists and was written by the same
-- database transaction (so a posted, committed transaction can never gain entries), and its
-- account exists in the entry's currency. Queues the commit-time check (again, if it already ran
-- because constraints were set immediate) and notes the guarded accounts touched.
create or replace function ledger.check_new_entries() returns trigger language plpgsql as $$
declare
    this_xid xid := ledger.current_xid();
    lowest_id bigint;
    highest_id bigint;
    transactions_named bigint;
    sealed_here bigint;
    bad_entry bigint;
    bad_key text;
    bad_account text;
    bad_currency text;
    touched_guarded text[];
begin
    select min(n.transaction_id), max(n.transaction_id), count(*)
        into lowest_id, highest_id, transactions_named
        from (select distinct transaction_id from new_rows) n;
    if transactions_named = 0 then
        return null;
    end if;
    -- The range keeps this to the batch's transactions whatever the ledger's size.
    select count(*) into sealed_here from ledger.transactions t
        where t.id between lowest_id and highest_id and t.xmin = this_xid
            and t.id in (select transaction_id from new_rows);
    if sealed_here < transactions_named then
        select n.id, t.transaction_key into bad_entry, bad_key
            from new_rows n left join ledger.transactions t on t.id = n.transaction_id
            where t.id is null or t.xmin <> this_xid
            order by n.id
            limit 1;
        if bad_key is null then
            raise exception 'ledger entry % belongs to no transaction', bad_entry
                using errcode = 'foreign_key_violation', constraint = 'entries_transaction';
        end if;
        raise exception 'ledger entry % adds to transaction %, which was posted before; '
            'post a correcting transaction instead', bad_entry, bad_key
            using errcode = 'check_violation', constraint = 'entries_sealed';
    end if;

    select (array_agg(n.account order by n.account collate "C") filter (where a.name is null))[1],
            (array_agg(n.currency order by n.account collate "C") filter (where a.name is null))[1],
            coalesce(array_agg(distinct n.account) filter (where a.must_not_go_negative), '{}')
        into bad_account, bad_currency, touched_guarded
        from (select distinct account, currency from new_rows) n
        left join ledger.accounts a on a.name = n.account and a.currency = n.currency;
    if bad_account is not null then
        raise exception 'ledger account % in % is not open (an entry must be in its account''s '
            'currency)', bad_account, bad_currency
            using errcode = 'foreign_key_violation', constraint = 'entries_account_currency';
    end if;

    insert into ledger.pending_checks (xid, first_transaction_id, guarded_accounts)
        values (pg_current_xact_id(), lowest_id, touched_guarded)
        on conflict (xid) do update set
            first_transaction_id = least(
                ledger.pending_checks.first_transaction_id, excluded.first_transaction_id),
            guarded_accounts = array(
                select distinct unnest(
                    ledger.pending_checks.guarded_accounts || excluded.guarded_accounts));
    return null;
end
$$;

-- At commit, once per database transaction, over every ledger transaction it wrote: at least two
-- entries summing to zero per currency; a reversal negates its original exactly; no guarded
-- account below zero.
create or replace function ledger.check_pending() returns trigger language plpgsql as $$
declare
    this_xid xid := ledger.current_xid();
    first_id bigint;
    guarded_names text[];
    several_currency_ids bigint[];
    reversal_ids bigint[];
    bad_id bigint;
    bad_count bigint;
    bad_key text;
    bad_detail text;
    guarded_name text;
    guarded_side text;
    guarded_balance numeric;
begin
    -- The row as it is now: entries statements after its insertion added guarded accounts.
    select p.first_transaction_id, p.guarded_accounts into first_id, guarded_names
        from ledger.pending_checks p where p.xid = new.xid;
    if first_id is null then
        return null;  -- checked already (constraints set immediate, then this row re-queued)
    end if;
    -- One pass over this database transaction's ledger transactions and their entries (every
    -- entry of such a transaction was written by it: the statement check refuses others).
    -- Transactions in one currency balance when their entries sum to zero; the few in several
    -- currencies are checked per currency below.
    select min(per_transaction.id) filter (where per_transaction.entry_count < 2
                or (per_transaction.currencies = 1 and per_transaction.total <> 0)),
            coalesce(array_agg(per_transaction.id) filter (where per_transaction.currencies > 1),
                '{}'),
            coalesce(array_agg(per_transaction.id order by per_transaction.id)
                filter (where per_transaction.reverses_id is not null), '{}')
        into bad_id, several_currency_ids, reversal_ids
        from (
            select t.id, t.reverses_id, count(e.transaction_id) as entry_count,
                case when min(e.currency) = max(e.currency) then 1 else 2 end as currencies,
                sum(e.amount_minor) as total
            from ledger.transactions t
            left join ledger.entries e on e.transaction_id = t.id and e.transaction_id >= first_id
            where t.id >= first_id and t.xmin = this_xid
            group by t.id
        ) per_transaction;
    if bad_id is null and cardinality(several_currency_ids) > 0 then
        select min(p.transaction_id) into bad_id
            from (
                select e.transaction_id from unnest(several_currency_ids) as n(id)
                join ledger.entries e on e.transaction_id = n.id
                group by e.transaction_id, e.currency
                having sum(e.amount_minor) <> 0
            ) p;
    end if;
    if bad_id is not null then
        select t.transaction_key, coalesce(sum(p.entry_count), 0),
                min(p.currency) filter (where p.total <> 0)
            into bad_key, bad_count, bad_detail
            from ledger.transactions t
            left join lateral (
                select e.currency, count(*) as entry_count, sum(e.amount_minor) as total
                from ledger.entries e where e.transaction_id = t.id group by e.currency
            ) p on true
            where t.id = bad_id
            group by t.transaction_key;
        if bad_count < 2 then
            raise exception 'ledger transaction % has % entries; a transaction needs at least two',
                bad_key, bad_count
                using errcode = 'check_violation', constraint = 'transactions_balanced';
        end if;
        raise exception 'ledger transaction % does not balance in %', bad_key, bad_detail
            using errcode = 'check_violation', constraint = 'transactions_balanced';
    end if;

    select t.transaction_key, o.transaction_key into bad_key, bad_detail
        from unnest(reversal_ids) as r(id)
        join ledger.transactions t on t.id = r.id
        join ledger.transactions o on o.id = t.reverses_id
        where o.reverses_id is not null
            or exists (
                select e.account, e.currency, sum(e.amount_minor) from ledger.entries e
                where e.transaction_id = t.id group by e.account, e.currency
                except
                select e.account, e.currency, -sum(e.amount_minor) from ledger.entries e
                where e.transaction_id = o.id group by e.account, e.currency
            )
            or exists (
                select e.account, e.currency, -sum(e.amount_minor) from ledger.entries e
                where e.transaction_id = o.id group by e.account, e.currency
                except
                select e.account, e.currency, sum(e.amount_minor) from ledger.entries e
                where e.transaction_id = t.id group by e.account, e.currency
            )
        limit 1;
    if bad_key is not null then
        raise exception 'ledger transaction % reverses % but is not its exact negation (or '
            'reverses a reversal); a reversal moves every amount of its original back',
            bad_key, bad_detail
            using errcode = 'check_violation', constraint = 'transactions_reversal_exact';
    end if;

    if cardinality(guarded_names) > 0 then
        -- Serialise writers of the guarded accounts touched (in name order, so never
        -- deadlocking), then read what they committed.
        perform 1 from ledger.accounts a where a.name = any(guarded_names)
            order by a.name collate "C"
            for no key update;
        select a.name, a.normal_side, b.balance into guarded_name, guarded_side, guarded_balance
            from ledger.accounts a
            cross join lateral (
                select coalesce(sum(e.amount_minor), 0) as balance
                from ledger.entries e where e.account = a.name
            ) b
            where a.name = any(guarded_names)
            and ((a.normal_side = 'debit' and b.balance < 0)
                or (a.normal_side = 'credit' and b.balance > 0))
            order by a.name collate "C" limit 1;
        if guarded_name is not null then
            raise exception 'ledger account % must not go negative: its % balance would be %',
                guarded_name, guarded_side,
                case guarded_side when 'debit' then guarded_balance else -guarded_balance end
                using errcode = 'check_violation', constraint = 'accounts_must_not_go_negative';
        end if;
    end if;

    delete from ledger.pending_checks where xid = new.xid;
    return null;
end
$$;
