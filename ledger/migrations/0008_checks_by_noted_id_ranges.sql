-- The same guarantees as 0007, with the per-row lookups of a batch's checks replaced by what
-- the statement triggers already see, so a batch of 100,000 entries costs its checks one pass
-- over each statement's rows:
-- - the transactions statement trigger notes how many ledger transactions the database
--   transaction wrote and their lowest and highest id. Ids are unique, so when there are as many
--   as ids in that range, the range holds exactly the transactions written here, and an entry
--   whose transaction id falls in it needs no lookup to prove its transaction was written here;
-- - the entries statement trigger checks each of its transactions balanced within the statement
--   (at least two entries, one currency, summing to zero) in one grouping of its rows;
-- - at commit, when every transaction written here got all of its entries from one such
--   statement (the counts match, the statements' transactions do not overlap), the balance is
--   proven and the pass over the transactions and their entries is skipped. Anything else
--   (several currencies, entries spread over statements, transactions outside the range) is
--   checked by 0007's queries, unchanged. So is everything a database transaction does once it
--   wrote ledger transactions inside a savepoint (rows whose xmin is not the top-level id,
--   which 0007's queries do not count as its own).
-- The noted counts now decide checks, so pending_checks can be written only by these triggers.
-- The entries' own currency check goes: an entry's (account, currency) must be an open account's,
-- whose currency is checked on the account.

alter table ledger.entries drop constraint entries_currency_check;

alter table ledger.pending_checks
    add column transactions_noted bigint not null default 0,
    add column lowest_noted_id bigint,
    add column highest_noted_id bigint,
    add column noted_reversal_ids bigint[] not null default '{}',
    add column entries_transactions bigint not null default 0,
    add column highest_entries_transaction_id bigint,
    add column entries_balanced_per_statement boolean not null default true,
    add column written_in_subtransaction boolean not null default false;

-- A client writing pending_checks itself could make the commit check skip its work; only the
-- ledger's triggers (nested at least one level deep) write it.
create function ledger.refuse_direct_pending_change() returns trigger language plpgsql as $$
begin
    if pg_trigger_depth() < 2 then
        raise exception 'ledger.pending_checks is written only by the ledger''s triggers'
            using errcode = 'insufficient_privilege';
    end if;
    return null;
end
$$;
create trigger pending_checks_written_by_triggers
    before insert or update or delete or truncate on ledger.pending_checks
    for each statement execute function ledger.refuse_direct_pending_change();

-- Per statement inserting ledger transactions: how many, their id range, the reversals among
-- them, and the commit-time check queued.
create or replace function ledger.note_new_transactions() returns trigger language plpgsql as $$
declare
    noted bigint;
    lowest_id bigint;
    highest_id bigint;
    reversal_ids bigint[];
    in_subtransaction boolean;
begin
    select count(*), min(n.id), max(n.id),
            coalesce(array_agg(n.id order by n.id) filter (where n.reverses_id is not null), '{}')
        into noted, lowest_id, highest_id, reversal_ids
        from new_rows n;
    if noted = 0 then
        return null;
    end if;
    -- A statement's rows share one xmin: the top-level transaction's id, or a savepoint's.
    select t.xmin <> ledger.current_xid() into in_subtransaction
        from ledger.transactions t where t.id = lowest_id;
    insert into ledger.pending_checks as p (xid, first_transaction_id, transactions_noted,
            lowest_noted_id, highest_noted_id, noted_reversal_ids, written_in_subtransaction)
        values (pg_current_xact_id(), lowest_id, noted, lowest_id, highest_id, reversal_ids,
            in_subtransaction)
        on conflict (xid) do update set
            written_in_subtransaction =
                p.written_in_subtransaction or excluded.written_in_subtransaction,
            first_transaction_id = least(p.first_transaction_id, excluded.first_transaction_id),
            transactions_noted = p.transactions_noted + excluded.transactions_noted,
            lowest_noted_id = least(p.lowest_noted_id, excluded.lowest_noted_id),
            highest_noted_id = greatest(p.highest_noted_id, excluded.highest_noted_id),
            noted_reversal_ids = p.noted_reversal_ids || excluded.noted_reversal_ids;
    return null;
end
$$;

-- Immediately, per statement: each entry's transaction exists and was written by the same
-- database transaction (so a posted, committed transaction can never gain entries), and its
-- account exists in the entry's currency. Notes whether each of the statement's transactions
-- balances within it, and the guarded accounts touched; queues the commit-time check.
create or replace function ledger.check_new_entries() returns trigger language plpgsql as $$
declare
    this_xid xid := ledger.current_xid();
    pending ledger.pending_checks%rowtype;
    statement_transactions bigint;
    lowest_id bigint;
    highest_id bigint;
    all_balanced boolean;
    in_noted_range boolean;
    bad_entry bigint;
    bad_key text;
    bad_account text;
    bad_currency text;
    touched_guarded text[];
begin
    -- One grouping of the statement's entries by transaction. The "C" collation compares
    -- currencies by bytes (equality is all that matters here).
    select count(*), min(per_transaction.transaction_id), max(per_transaction.transaction_id),
            bool_and(per_transaction.balanced)
        into statement_transactions, lowest_id, highest_id, all_balanced
        from (
            select n.transaction_id,
                count(*) >= 2 and min(n.currency collate "C") = max(n.currency collate "C")
                    and sum(n.amount_minor) = 0 as balanced
            from new_rows n group by n.transaction_id
        ) per_transaction;
    if statement_transactions = 0 then
        return null;
    end if;

    select p.* into pending from ledger.pending_checks p where p.xid = pg_current_xact_id();
    -- As many transactions noted as ids in their range: the range is exactly this database
    -- transaction's ledger transactions.
    in_noted_range := coalesce(
        not pending.written_in_subtransaction
            and pending.transactions_noted > 0
            and pending.highest_noted_id - pending.lowest_noted_id + 1 = pending.transactions_noted
            and lowest_id >= pending.lowest_noted_id and highest_id <= pending.highest_noted_id,
        false);
    -- Otherwise each distinct transaction is looked up by its key once, as in 0007.
    if not in_noted_range and exists (
        select 1 from (select distinct transaction_id from new_rows) n
        left join ledger.transactions t on t.id = n.transaction_id
        where t.id is null or t.xmin <> this_xid
    ) then
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

    -- Balanced per statement holds for the whole database transaction only while no two
    -- statements share a transaction: each statement's transactions must lie above the last's.
    insert into ledger.pending_checks as p (xid, first_transaction_id, guarded_accounts,
            entries_transactions, highest_entries_transaction_id, entries_balanced_per_statement)
        values (pg_current_xact_id(), lowest_id, touched_guarded, statement_transactions,
            highest_id, in_noted_range and all_balanced)
        on conflict (xid) do update set
            first_transaction_id = least(p.first_transaction_id, excluded.first_transaction_id),
            guarded_accounts = case when cardinality(excluded.guarded_accounts) = 0
                then p.guarded_accounts
                else array(select distinct unnest(p.guarded_accounts || excluded.guarded_accounts))
                end,
            entries_transactions = p.entries_transactions + excluded.entries_transactions,
            highest_entries_transaction_id = greatest(
                p.highest_entries_transaction_id, excluded.highest_entries_transaction_id),
            entries_balanced_per_statement = p.entries_balanced_per_statement
                and excluded.entries_balanced_per_statement
                and (p.highest_entries_transaction_id is null
                    or excluded.first_transaction_id > p.highest_entries_transaction_id);
    return null;
end
$$;

-- At commit, once per database transaction, over every ledger transaction it wrote: at least two
-- entries summing to zero per currency; a reversal negates its original exactly; no guarded
-- account below zero. The balance is already proven when every transaction noted got all of its
-- entries, balanced, from one entries statement; otherwise it is checked from the stored rows.
create or replace function ledger.check_pending() returns trigger language plpgsql as $$
declare
    this_xid xid := ledger.current_xid();
    pending ledger.pending_checks%rowtype;
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
    -- The row as it is now: statements after its insertion added to it.
    select p.* into pending from ledger.pending_checks p where p.xid = new.xid;
    if pending.first_transaction_id is null then
        return null;  -- checked already (constraints set immediate, then this row re-queued)
    end if;
    first_id := pending.first_transaction_id;
    guarded_names := pending.guarded_accounts;

    -- Every transaction noted is in the entries statements (as many distinct ones, all within
    -- the noted range, none in two statements), and each balanced within its statement.
    if pending.entries_balanced_per_statement
            and not pending.written_in_subtransaction
            and pending.transactions_noted > 0
            and pending.entries_transactions = pending.transactions_noted
            and pending.highest_noted_id - pending.lowest_noted_id + 1
                = pending.transactions_noted then
        reversal_ids := pending.noted_reversal_ids;
    else
        -- One pass over this database transaction's ledger transactions and their entries
        -- (every entry of such a transaction was written by it: the statement check refuses
        -- others). Transactions in one currency balance when their entries sum to zero; the few
        -- in several currencies are checked per currency below.
        select min(per_transaction.id) filter (where per_transaction.entry_count < 2
                    or (per_transaction.currencies = 1 and per_transaction.total <> 0)),
                coalesce(array_agg(per_transaction.id)
                    filter (where per_transaction.currencies > 1), '{}'),
                coalesce(array_agg(per_transaction.id order by per_transaction.id)
                    filter (where per_transaction.reverses_id is not null), '{}')
            into bad_id, several_currency_ids, reversal_ids
            from (
                select t.id, t.reverses_id, count(e.transaction_id) as entry_count,
                    case when min(e.currency) = max(e.currency) then 1 else 2 end as currencies,
                    sum(e.amount_minor) as total
                from ledger.transactions t
                left join ledger.entries e
                    on e.transaction_id = t.id and e.transaction_id >= first_id
                where t.id >= first_id and t.xmin = this_xid
                group by t.id
            ) per_transaction;
        reversal_ids := array(
            select distinct unnest(reversal_ids || pending.noted_reversal_ids) order by 1);
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
                raise exception 'ledger transaction % has % entries; a transaction needs at '
                    'least two', bad_key, bad_count
                    using errcode = 'check_violation', constraint = 'transactions_balanced';
            end if;
            raise exception 'ledger transaction % does not balance in %', bad_key, bad_detail
                using errcode = 'check_violation', constraint = 'transactions_balanced';
        end if;
    end if;

    if cardinality(reversal_ids) > 0 then
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
