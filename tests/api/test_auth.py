"""Tokens and roles: 401 without a valid token, 403 for a role that may not, on every route;
tokens configured by their hash and never logged."""

from __future__ import annotations

import logging

import pytest

from api.auth import Role, hash_token, parse_tokens, principal_of, token_entry
from tests.api.conftest import TOKENS, ApiServer

CREDIT = {"amount_minor": "100", "currency": "usd", "reason": "goodwill"}
ADJUSTMENT = {
    "amount_minor": "35",
    "currency": "usd",
    "direction": "lower_receivable",
    "reason": "outage",
}
# (method, path, body): every route behind a token.
ROUTES = [
    ("GET", "/customers/cus_alpha/ledger", None),
    ("GET", "/customers/cus_alpha/credits", None),
    ("POST", "/customers/cus_alpha/credits", CREDIT),
    ("POST", "/customers/cus_alpha/credits/api-none/approve", None),
    ("POST", "/customers/cus_alpha/adjustments", ADJUSTMENT),
]


@pytest.mark.parametrize(
    ("authorization", "code"),
    [
        (None, "missing_token"),
        ("Bearer mbk_not_a_token", "invalid_token"),
        (f"Basic {TOKENS['finance']}", "invalid_token"),
        ("Bearer", "invalid_token"),
        ("Bearer " + "x" * 5000, "invalid_token"),
    ],
)
def test_every_route_refuses_a_missing_or_invalid_token(
    api: ApiServer, authorization: str | None, code: str
) -> None:
    headers = {"Idempotency-Key": "auth-test"}
    if authorization is not None:
        headers["Authorization"] = authorization
    before = api.counts()
    with api.client() as client:
        for method, path, body in ROUTES:
            response = client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["code"] == code
            assert error["request_id"] == response.headers["request-id"]
    assert api.counts() == before


# What each role may do: (method, path) -> roles allowed.
ALLOWED = {
    ("GET", "/customers/cus_alpha/ledger"): {"viewer", "support", "finance"},
    ("GET", "/customers/cus_alpha/credits"): {"viewer", "support", "finance"},
    ("POST", "/customers/cus_alpha/credits"): {"support", "finance"},
    ("POST", "/customers/cus_alpha/credits/api-none/approve"): {"finance"},
    ("POST", "/customers/cus_alpha/adjustments"): {"finance"},
}


@pytest.mark.parametrize("who", ["viewer", "support", "finance"])
def test_each_role_may_do_what_it_is_allowed_and_nothing_else(api: ApiServer, who: str) -> None:
    with api.client(who) as client:
        for method, path, body in ROUTES:
            response = client.request(
                method, path, json=body, headers={"Idempotency-Key": f"role-{who}-{len(path)}"}
            )
            if who in ALLOWED[(method, path)]:
                # Allowed: the approve of a grant that does not exist is the only refusal.
                assert response.status_code in (200, 201, 404), (who, method, path, response.text)
                if response.status_code == 404:
                    assert response.json()["error"]["code"] == "unknown_grant"
            else:
                assert response.status_code == 403, (who, method, path, response.text)
                assert response.json()["error"]["code"] == "forbidden"


def test_a_refused_role_writes_nothing(api: ApiServer) -> None:
    before = api.counts()
    with api.client("viewer") as client:
        response = client.post(
            "/customers/cus_alpha/credits", json=CREDIT, headers={"Idempotency-Key": "v1"}
        )
    assert response.status_code == 403
    assert api.counts() == before


def test_tokens_are_configured_by_hash_and_never_logged(
    api: ApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with api.client("finance") as client:
        client.get("/customers/cus_alpha/ledger")
        client.get("/customers/cus_alpha/ledger", headers={"Authorization": "Bearer mbk_wrong"})
        client.get("/customers/nobody/ledger")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    for token in TOKENS.values():
        assert token not in logged
    assert "mbk_wrong" not in logged
    for token_hash in api.config.principals:
        assert len(token_hash) == 64


def test_token_entries_round_trip_and_malformed_entries_are_refused() -> None:
    entry = token_entry("alice", Role.SUPPORT, "mbk_secret")
    assert "mbk_secret" not in entry
    principals = parse_tokens(f"{entry}, bob:viewer:{hash_token('mbk_other')}")
    assert principal_of("Bearer mbk_secret", principals).name == "alice"
    assert principal_of("bearer mbk_other", principals).role is Role.VIEWER
    for bad in (
        "alice:support",  # no hash
        "alice:root:" + "0" * 64,  # unknown role
        "alice:support:mbk_secret",  # the token itself instead of its hash
        f"{entry},{entry}",  # twice
    ):
        with pytest.raises(ValueError, match="METERBOOK_API_TOKENS"):
            parse_tokens(bad)


def test_unknown_routes_and_methods_answer_in_the_error_shape(api: ApiServer) -> None:
    with api.client("viewer") as client:
        missing = client.get("/nothing/here")
        wrong_method = client.delete("/customers/cus_alpha/ledger")
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "not_found")
    assert (wrong_method.status_code, wrong_method.json()["error"]["code"]) == (
        405,
        "method_not_allowed",
    )
