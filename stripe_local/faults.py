"""Faults on demand, for proving that callers survive what Stripe and networks do.

A share of API requests (``/v1/…``, ``/v2/…``; never ``/_local/…``) gets one of:

- ``429``: a rate-limit error, before anything is done;
- ``500``: an API error, before anything is done;
- ``timeout``: no answer for ``timeout_seconds`` (longer than the caller's timeout), nothing done;
- ``lost``: the request is carried out and committed, then its response is lost (a 502 from a
  proxy in between): a retry must not do the work twice.

Choices come from a seeded random generator, so a run with the same requests in the same order
injects the same faults.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stripe_local.errors import StripeError

FAULT_KINDS = ("429", "500", "timeout", "lost")


@dataclass
class FaultPlan:
    """What to inject: ``rate`` of API requests get a fault, drawn evenly from ``kinds``."""

    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    timeout_seconds: float = 2.0
    injected: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"A fault rate is a share between 0 and 1, not {self.rate}.")
        unknown = sorted(set(self.kinds) - set(FAULT_KINDS))
        if unknown or not self.kinds:
            raise ValueError(
                f"Fault kinds must be some of {', '.join(FAULT_KINDS)}; got {list(self.kinds)}."
            )
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str) -> FaultPlan:
        """``rate=0.3,kinds=429+500+timeout+lost,seed=7,timeout=2`` (as the CLI and the
        ``METERBOOK_STRIPE_LOCAL_FAULTS`` variable write it)."""
        options: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name == "rate":
                options["rate"] = float(value)
            elif name == "kinds":
                options["kinds"] = tuple(filter(None, value.split("+")))
            elif name == "seed":
                options["seed"] = int(value)
            elif name == "timeout":
                options["timeout_seconds"] = float(value)
            else:
                raise ValueError(
                    f"Unknown fault option {name!r} in {text!r}; use rate, kinds, seed, timeout."
                )
        return cls(**options)

    def draw(self) -> str | None:
        """The fault for the next API request, or None."""
        with self._lock:
            if self.rate == 0 or self._random.random() >= self.rate:
                return None
            kind = self._random.choice(self.kinds)
            self.injected[kind] = self.injected.get(kind, 0) + 1
            return kind

    def describe(self) -> dict[str, Any]:
        with self._lock:
            return {
                "rate": self.rate,
                "kinds": list(self.kinds),
                "seed": self.seed,
                "timeout_seconds": self.timeout_seconds,
                "injected": dict(self.injected),
            }


class FaultInjector:
    """ASGI middleware applying the current plan; ``plan`` may be replaced at run time."""

    def __init__(self, app: ASGIApp, plan: FaultPlan | None = None) -> None:
        self.app = app
        self.plan = plan or FaultPlan()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not path.startswith(("/v1/", "/v2/")):
            await self.app(scope, receive, send)
            return
        fault = self.plan.draw()
        if fault is None:
            await self.app(scope, receive, send)
        elif fault == "429":
            await _answer(
                send,
                StripeError(
                    429,
                    "Too many requests hit the API too quickly (injected by the local Stripe).",
                    code="rate_limit",
                    error_type="invalid_request_error",
                ),
            )
        elif fault == "500":
            await _answer(
                send,
                StripeError(
                    500,
                    "An unexpected error occurred (injected by the local Stripe).",
                    error_type="api_error",
                ),
            )
        elif fault == "timeout":
            await asyncio.sleep(self.plan.timeout_seconds)
            await _answer(
                send,
                StripeError(
                    504,
                    "The request timed out (injected by the local Stripe).",
                    error_type="api_error",
                ),
            )
        else:  # lost: do the work, then drop its answer
            await self.app(scope, receive, _discard)
            await _answer(
                send,
                StripeError(
                    502,
                    "Bad gateway: the response was lost after the request was carried out "
                    "(injected by the local Stripe).",
                    error_type="api_error",
                ),
            )


async def _discard(message: Message) -> None:
    return None


async def _answer(send: Send, error: StripeError) -> None:
    response = error.response()
    await send(
        {
            "type": "http.response.start",
            "status": response.status_code,
            "headers": response.raw_headers,
        }
    )
    await send({"type": "http.response.body", "body": response.body})


CORRUPTION_KINDS = ("dropped", "doubled")


@dataclass
class MeterCorruption:
    """A Stripe that acknowledges meter events but gets usage wrong, for reconciliation tests.

    A share ``drop_rate`` of accepted meter events counts for nothing and ``double_rate`` counts
    twice, while the caller sees a normal success. Which events is decided by a hash of the
    seed and the event's identifier, so it does not depend on arrival order or retries.
    """

    drop_rate: float = 0.0
    double_rate: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop_rate", "double_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a share between 0 and 1, not {value}.")
        if self.drop_rate + self.double_rate > 1.0:
            raise ValueError("drop_rate + double_rate cannot exceed 1.")

    @classmethod
    def parse(cls, text: str) -> MeterCorruption:
        """``drop=0.01,double=0.01,seed=3``."""
        options: dict[str, Any] = {}
        names = {"drop": "drop_rate", "double": "double_rate", "seed": "seed"}
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in names:
                raise ValueError(f"Unknown corruption option {name!r}: use drop, double, seed.")
            options[names[name]] = int(value) if name == "seed" else float(value)
        return cls(**options)

    def applied_value(self, identifier: str, value: int) -> tuple[int, str | None]:
        """The value the meter will count for an event, and how it was corrupted (if it was)."""
        if not (self.drop_rate or self.double_rate):
            return value, None
        digest = hashlib.sha256(f"{self.seed}:{identifier}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        if draw < self.drop_rate:
            return 0, "dropped"
        if draw < self.drop_rate + self.double_rate:
            return 2 * value, "doubled"
        return value, None

    def describe(self) -> dict[str, Any]:
        return {"drop_rate": self.drop_rate, "double_rate": self.double_rate, "seed": self.seed}
