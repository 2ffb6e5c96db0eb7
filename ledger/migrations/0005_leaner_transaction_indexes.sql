-- Fewer index insertions per posted transaction: the reversal link is indexed only where it
-- exists (almost every transaction has none), and posted_at is not indexed (balances as of a
-- system time filter rows already joined to their entries).
alter table ledger.transactions drop constraint transactions_reversed_once;
create unique index transactions_reversed_once on ledger.transactions (reverses_id)
    where reverses_id is not null;
drop index ledger.transactions_posted;
