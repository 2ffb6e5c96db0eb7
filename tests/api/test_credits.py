"""POST /customers/{id}/credits: posted to the ledger with its audit record in one transaction,
idempotent on the Idempotency-Key, limited per role, two-step over the approval threshold; and
every invalid request refused with its documented error and nothing written."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest

from api.ledger_tx import post_in_open_transaction
from ledger import Ledger
from ledger.postings import CreditKind, credit_grant
from tests.api.conftest import ApiServer

CREDIT = {"amount_minor": "500", "currency": "usd", "reason": "outage on 3 November"}


def post_credit(
    api: ApiServer, who: str, key: str | None, body: Any, customer: str = "cus_alpha"
) -> Any:
    headers = {"Idempotency-Key": key} if key is not None else {}
    with api.client(who) as client:
        return client.post(f"/customers/{customer}/credits", json=body, headers=headers)


def ledger_rows(api: ApiServer, key: str) -> list[tuple[str, Decimal]]:
    with psycopg.connect(api.ledger_url) as conn:
        rows = conn.execute(
            "select e.account, e.amount_minor from ledger.entries e "
            "join ledger.transactions t on t.id = e.transaction_id "
            "where t.transaction_key = %s order by e.account",
            [key],
        ).fetchall()
    return [(account, Decimal(amount)) for account, amount in rows]


def test_a_grant_is_posted_with_its_audit_record(api: ApiServer) -> None:
    body = CREDIT | {
        "expires_at": "2099-01-01T00:00:00Z",
        "priority": 10,
        "metrics": ["nimbus_small__requests"],
    }
    response = post_credit(api, "support", "grant-1", body)
    assert response.status_code == 201, response.text
    grant = response.json()
    assert grant["grant_id"] == "api-grant-1"
    assert grant["amount_minor"] == "500"  # a string, never a JSON number
    assert grant["status"] == "approved"
    assert grant["requested_by"] == grant["approved_by"] == "support"
    assert grant["ledger_transaction_key"] == "credit_grant:api-grant-1"
    assert grant["request_id"] == response.headers["request-id"]
    assert ledger_rows(api, "credit_grant:api-grant-1") == [
        ("customer:cus_alpha:promotional_credit", Decimal(-500)),
        ("platform:promotional_expense", Decimal(500)),
    ]
    with psycopg.connect(api.ledger_url) as conn:
        audit = conn.execute(
            "select principal, role, action, customer_id, subject_id, reason, request_id, "
            "idempotency_key, ledger_transaction_key, detail->>'amount_minor' from api.audit_log"
        ).fetchall()
    assert audit == [
        (
            "support",
            "support",
            "credit_granted",
            "cus_alpha",
            "api-grant-1",
            "outage on 3 November",
            grant["request_id"],
            "grant-1",
            "credit_grant:api-grant-1",
            "500",
        )
    ]
    with api.client("viewer") as client:
        listed = client.get("/customers/cus_alpha/credits").json()
    assert listed == [grant]


def test_a_replay_returns_the_original_result_and_writes_nothing(api: ApiServer) -> None:
    first = post_credit(api, "support", "grant-replay", CREDIT)
    counts = api.counts()
    again = post_credit(api, "support", "grant-replay", CREDIT)
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert api.counts() == counts


@pytest.mark.parametrize(
    ("who", "body", "path_customer"),
    [
        ("support", CREDIT | {"amount_minor": "501"}, "cus_alpha"),  # another amount
        ("support", CREDIT | {"reason": "another reason"}, "cus_alpha"),
        ("support", CREDIT, "cus_beta"),  # another customer
        ("finance", CREDIT, "cus_alpha"),  # another caller
    ],
)
def test_the_same_key_for_another_request_is_a_conflict(
    api: ApiServer, who: str, body: dict[str, Any], path_customer: str
) -> None:
    assert post_credit(api, "support", "grant-conflict", CREDIT).status_code == 201
    counts = api.counts()
    response = post_credit(api, who, "grant-conflict", body, customer=path_customer)
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "idempotency_key_reused"
    assert api.counts() == counts


INVALID = [
    # (case, body change or full body, status, code)
    ("negative amount", {"amount_minor": "-500"}, 422, "invalid_request"),
    ("zero amount", {"amount_minor": "0"}, 422, "invalid_request"),
    ("float amount", {"amount_minor": 5.25}, 422, "invalid_request"),
    ("integer number amount", {"amount_minor": 500}, 422, "invalid_request"),
    ("amount in exponent form", {"amount_minor": "5e2"}, 422, "invalid_request"),
    ("13 decimal places", {"amount_minor": "1.0000000000001"}, 422, "invalid_request"),
    ("unknown currency", {"currency": "xyz"}, 422, "unknown_currency"),
    ("malformed currency", {"currency": "USD"}, 422, "invalid_request"),
    ("empty reason", {"reason": ""}, 422, "invalid_request"),
    ("unknown field", {"note": "x"}, 422, "invalid_request"),
    ("unknown metric", {"metrics": ["gpu_hours"]}, 422, "unknown_metric"),
    ("expiry in the past", {"expires_at": "2020-01-01T00:00:00Z"}, 422, "expiry_in_past"),
    ("expiry without zone", {"expires_at": "2099-01-01T00:00:00"}, 422, "invalid_request"),
    ("priority out of range", {"priority": 5000}, 422, "invalid_request"),
    ("prepaid by support", {"kind": "prepaid"}, 403, "forbidden"),
    ("over support's limit", {"amount_minor": "10000.01"}, 403, "amount_over_role_limit"),
]


@pytest.mark.parametrize(
    ("case", "change", "status", "code"), INVALID, ids=[case for case, *_ in INVALID]
)
def test_an_invalid_grant_is_refused_with_its_error_and_nothing_written(
    api: ApiServer, case: str, change: dict[str, Any], status: int, code: str
) -> None:
    before = api.counts()
    body = {key: value for key, value in (CREDIT | change).items() if value is not None}
    response = post_credit(api, "support", "invalid-1", body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert error["request_id"] == response.headers["request-id"]
    assert api.counts() == before
    # The key was not used up: the corrected request succeeds under it.
    assert post_credit(api, "support", "invalid-1", CREDIT).status_code == 201


def test_missing_fields_unknown_customer_and_missing_key_are_refused(api: ApiServer) -> None:
    before = api.counts()
    missing = post_credit(api, "support", "k", {"currency": "usd", "reason": "x"})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "body.amount_minor"
    unknown = post_credit(api, "support", "k", CREDIT, customer="cus_nobody")
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "unknown_customer")
    no_key = post_credit(api, "support", None, CREDIT)
    assert (no_key.status_code, no_key.json()["error"]["code"]) == (
        400,
        "idempotency_key_required",
    )
    bad_key = post_credit(api, "support", "a key with spaces", CREDIT)
    assert (bad_key.status_code, bad_key.json()["error"]["code"]) == (
        422,
        "invalid_idempotency_key",
    )
    with api.client("support") as client:
        not_json = client.post(
            "/customers/cus_alpha/credits",
            content=b"{not json",
            headers={"Idempotency-Key": "k", "Content-Type": "application/json"},
        )
    assert (not_json.status_code, not_json.json()["error"]["code"]) == (422, "invalid_request")
    assert api.counts() == before


def test_an_oversized_body_is_refused_before_it_is_read(api: ApiServer) -> None:
    before = api.counts()
    body = CREDIT | {"reason": "x" * (api.config.max_body_bytes + 1)}
    response = post_credit(api, "support", "big", body)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"
    assert response.headers["request-id"] == response.json()["error"]["request_id"]
    assert api.counts() == before


def test_a_grant_over_the_threshold_waits_for_a_second_finance_approver(api: ApiServer) -> None:
    response = post_credit(api, "support", "big-grant", CREDIT | {"amount_minor": "8000"})
    assert response.status_code == 201
    pending = response.json()
    assert pending["status"] == "pending_approval"
    assert pending["ledger_transaction_key"] is None
    assert ledger_rows(api, "credit_grant:api-big-grant") == []
    approve = "/customers/cus_alpha/credits/api-big-grant/approve"
    with api.client("support") as client:
        assert client.post(approve).status_code == 403
    with api.client("finance") as client:
        approved = client.post(approve)
        assert approved.status_code == 200, approved.text
        assert approved.json()["status"] == "approved"
        assert approved.json()["approved_by"] == "finance"
        counts = api.counts()
        again = client.post(approve)  # approving twice changes nothing
    assert again.json() == approved.json()
    assert api.counts() == counts
    assert ledger_rows(api, "credit_grant:api-big-grant") == [
        ("customer:cus_alpha:promotional_credit", Decimal(-8000)),
        ("platform:promotional_expense", Decimal(8000)),
    ]
    with psycopg.connect(api.ledger_url) as conn:
        actions = conn.execute("select action, principal from api.audit_log order by id").fetchall()
    assert actions == [("credit_grant_requested", "support"), ("credit_grant_approved", "finance")]


def test_the_requester_cannot_approve_their_own_grant(api: ApiServer) -> None:
    body = CREDIT | {"amount_minor": "20000", "kind": "prepaid"}
    assert post_credit(api, "finance", "own-grant", body).json()["status"] == "pending_approval"
    approve = "/customers/cus_alpha/credits/api-own-grant/approve"
    counts = api.counts()
    with api.client("finance") as client:
        refused = client.post(approve)
    assert (refused.status_code, refused.json()["error"]["code"]) == (
        403,
        "second_approver_required",
    )
    assert api.counts() == counts
    with api.client("finance2") as client:
        approved = client.post(approve)
    assert approved.json()["status"] == "approved"
    assert ledger_rows(api, "credit_grant:api-own-grant") == [
        ("customer:cus_alpha:prepaid_credit", Decimal(-20000)),
        ("platform:stripe_clearing", Decimal(20000)),
    ]


def test_a_ledger_posting_in_the_open_transaction_rolls_back_with_it(api: ApiServer) -> None:
    """The API's writes and the ledger's commit or vanish together."""
    grant = credit_grant(
        grant_id="rolled-back",
        customer_id="cus_alpha",
        credit_kind=CreditKind.PROMOTIONAL,
        amount_minor=Decimal(1),
        currency="usd",
        effective_at=datetime(2026, 11, 1, tzinfo=UTC),
        actor="test",
        reason="test",
    )
    with psycopg.connect(api.ledger_url, autocommit=True) as conn:
        with pytest.raises(RuntimeError, match="abandon"), conn.transaction():
            post_in_open_transaction(conn, [grant])
            raise RuntimeError("abandon the request")
        assert ledger_rows(api, grant.key) == []
        with conn.transaction():
            post_in_open_transaction(conn, [grant])
    assert len(ledger_rows(api, grant.key)) == 2
    with Ledger.connect(api.ledger_url) as book:
        assert book.verify().ok
