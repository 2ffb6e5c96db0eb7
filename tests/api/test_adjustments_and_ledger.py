"""POST /customers/{id}/adjustments (new ledger entries, never an edit) and
GET /customers/{id}/ledger (the customer's transactions with their causes, paginated)."""

from __future__ import annotations

from typing import Any

import pytest

from ledger import Ledger
from tests.api.conftest import ApiServer

ADJUSTMENT = {
    "amount_minor": "35",
    "currency": "usd",
    "direction": "lower_receivable",
    "reason": "goodwill for the 5 November outage",
}


def post_adjustment(api: ApiServer, key: str, body: Any, who: str = "finance") -> Any:
    with api.client(who) as client:
        return client.post(
            "/customers/cus_beta/adjustments", json=body, headers={"Idempotency-Key": key}
        )


def test_an_adjustment_posts_new_entries_in_either_direction(api: ApiServer) -> None:
    lowered = post_adjustment(api, "adj-1", ADJUSTMENT)
    assert lowered.status_code == 201, lowered.text
    assert lowered.json()["ledger_transaction_key"] == "adjustment:adj-1"
    assert sorted((e["account"], e["amount_minor"]) for e in lowered.json()["entries"]) == [
        ("customer:cus_beta:receivable", "-35"),
        ("platform:adjustments", "35"),
    ]
    raised = post_adjustment(
        api, "adj-2", ADJUSTMENT | {"direction": "raise_receivable", "amount_minor": "10.5"}
    )
    assert sorted((e["account"], e["amount_minor"]) for e in raised.json()["entries"]) == [
        ("customer:cus_beta:receivable", "10.5"),
        ("platform:adjustments", "-10.5"),
    ]
    with Ledger.connect(api.ledger_url) as book:
        assert book.balance("customer:cus_beta:receivable", "usd") == -24.5
        assert book.verify().ok
    counts = api.counts()
    replay = post_adjustment(api, "adj-1", ADJUSTMENT)
    assert replay.json() == lowered.json()
    assert api.counts() == counts
    conflict = post_adjustment(api, "adj-1", ADJUSTMENT | {"amount_minor": "36"})
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (
        409,
        "idempotency_key_reused",
    )
    assert api.counts() == counts


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"amount_minor": "-35"}, 422, "invalid_request"),
        ({"amount_minor": 35.0}, 422, "invalid_request"),
        ({"direction": "sideways"}, 422, "invalid_request"),
        ({"currency": "eur"}, 422, "unknown_currency"),
        ({"reason": None}, 422, "invalid_request"),
        ({"amount_minor": "1000000.01"}, 403, "amount_over_role_limit"),
    ],
)
def test_an_invalid_adjustment_writes_nothing(
    api: ApiServer, change: dict[str, Any], status: int, code: str
) -> None:
    before = api.counts()
    body = {key: value for key, value in (ADJUSTMENT | change).items() if value is not None}
    response = post_adjustment(api, "adj-bad", body)
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)
    assert api.counts() == before


def test_the_ledger_of_a_customer_pages_through_its_transactions(api: ApiServer) -> None:
    for number in range(5):
        response = post_adjustment(api, f"page-{number}", ADJUSTMENT)
        assert response.status_code == 201
    with api.client("support") as client:
        # Another customer's transactions are not in it.
        client.post(
            "/customers/cus_alpha/credits",
            json={"amount_minor": "1", "currency": "usd", "reason": "x"},
            headers={"Idempotency-Key": "other"},
        )
    keys: list[str] = []
    cursor = None
    pages = 0
    with api.client("viewer") as client:
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = client.get("/customers/cus_beta/ledger", params=params).json()
            pages += 1
            assert page["as_of"]
            for transaction in page["transactions"]:
                keys.append(transaction["transaction_key"])
                assert transaction["cause_type"] == "adjustment"
                assert transaction["metadata"]["actor"] == "finance"
                assert {e["account"] for e in transaction["entries"]} == {
                    "customer:cus_beta:receivable",
                    "platform:adjustments",
                }
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert keys == [f"adjustment:page-{number}" for number in range(5)]
        everything = client.get("/customers/cus_beta/ledger").json()["transactions"]
        first = everything[0]["effective_at"]
        third = everything[2]["effective_at"]
        window = client.get(
            "/customers/cus_beta/ledger", params={"from": first, "to": third}
        ).json()["transactions"]
        assert [t["transaction_key"] for t in window] == keys[:2]
        bad_cursor = client.get("/customers/cus_beta/ledger", params={"cursor": "nonsense"})
        assert (bad_cursor.status_code, bad_cursor.json()["error"]["code"]) == (
            422,
            "invalid_cursor",
        )
        no_zone = client.get("/customers/cus_beta/ledger", params={"from": "2026-11-01T00:00:00"})
        assert no_zone.status_code == 422
        unknown = client.get("/customers/cus_nobody/ledger")
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_customer")
        too_many = client.get("/customers/cus_beta/ledger", params={"limit": 501})
        assert too_many.status_code == 422


def test_openapi_documents_every_route(api: ApiServer) -> None:
    with api.client() as client:
        schema = client.get("/openapi.json").json()
        assert client.get("/docs").status_code == 200
    assert set(schema["paths"]) >= {
        "/customers/{customer_id}/ledger",
        "/customers/{customer_id}/credits",
        "/customers/{customer_id}/credits/{grant_id}/approve",
        "/customers/{customer_id}/adjustments",
    }
    amount = schema["components"]["schemas"]["CreditGrantRequest"]["properties"]["amount_minor"]
    assert amount["type"] == "string"
