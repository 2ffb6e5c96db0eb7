"""The billing API: customers, ledger, credits and adjustments over HTTP (FastAPI), and the same
functions as `meterbook` sub-commands."""
