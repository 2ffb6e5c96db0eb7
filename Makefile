.PHONY: setup demo test lint bench ui

setup:
	uv sync --frozen

demo:
	uv run --frozen meterbook demo

test:
	uv run --frozen pytest

lint:
	uv run --frozen ruff check .
	uv run --frozen ruff format --check .

bench:
	uv run --frozen python bench/end_to_end.py
	uv run --frozen python bench/ledger_posting.py

ui:
	uv run --frozen meterbook ui
