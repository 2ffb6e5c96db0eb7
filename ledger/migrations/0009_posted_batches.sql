-- Batches posted, by the digest of their keys: a replay of a whole batch (a retried pipeline
-- step) is recognised by one lookup and a comparison of content digests, instead of reading
-- back the content hash of every key. A row is written in the database transaction that wrote
-- the batch's new transactions (`transactions`: how many), so it proves those keys were posted
-- with that content; the transactions stay the source of truth (a batch not found here is
-- checked key by key, as before).
create table ledger.posted_batches (
    keys_digest bytea primary key
        constraint posted_batches_keys_digest_sha256 check (octet_length(keys_digest) = 32),
    content_digest bytea not null
        constraint posted_batches_content_digest_sha256 check (octet_length(content_digest) = 32),
    transactions integer not null constraint posted_batches_transactions check (transactions > 0),
    posted_at timestamptz not null default now()
);

create trigger posted_batches_append_only before update or delete or truncate
    on ledger.posted_batches for each statement execute function ledger.refuse_change();

-- Only in a database transaction that wrote at least as many ledger transactions (noted by the
-- ledger's own triggers in ledger.pending_checks until its commit check).
create function ledger.check_posted_batch() returns trigger language plpgsql as $$
begin
    if not exists (
        select 1 from ledger.pending_checks p
        where p.xid = pg_current_xact_id() and p.transactions_noted >= new.transactions
    ) then
        raise exception 'ledger.posted_batches: a batch is recorded only by the database '
            'transaction that posted its % new transaction(s)', new.transactions
            using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
create trigger posted_batches_written_with_their_transactions before insert
    on ledger.posted_batches for each row execute function ledger.check_posted_batch();
