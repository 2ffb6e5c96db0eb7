"""The price book and its charge models in pure Python: the reference the dbt rating is tested
against, and the reader of the price-book seeds (no Dagster or dbt imports)."""
