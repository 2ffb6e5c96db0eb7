"""A strict Stripe-compatible server for local runs and tests (a fake: never used in production)."""
