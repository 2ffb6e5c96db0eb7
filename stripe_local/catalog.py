"""Products, prices (per unit and tiered), subscriptions and subscription items: created and
listed as Stripe does, with its parameter checks and cursor pagination."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import stripe.params as core_params
from starlette.requests import Request
from starlette.routing import Route

from pricing.periods import billing_period_of
from stripe_local.errors import StripeError, new_id, not_found
from stripe_local.params import (
    check_parameters,
    hash_param,
    integer_param,
    metadata_param,
    string_param,
)
from stripe_local.store import LocalStripeStore

Action = Callable[[Request, dict[str, Any]], Awaitable[dict[str, Any]]]
RouteMaker = Callable[..., list[Route]]
Listing = Callable[[Request, list[dict[str, Any]], dict[str, Any], str], dict[str, Any]]
DAY_SECONDS = 86_400


def subscription_period(at: int, anchor: int) -> tuple[int, int]:
    """The billing period holding ``at`` for a monthly subscription anchored at ``anchor``, as
    Stripe bills it: from the anchor's day of a month (the last day of a shorter month) at its
    time of day, to the same in the next month. Before a future anchor, the first period runs
    from ``at`` to the anchor (Stripe prorates it)."""
    if anchor > at:
        return at, anchor
    # Periods are pricing.periods' day-level periods, moved to the anchor's time of day.
    time_of_day = anchor % DAY_SECONDS
    anchor_day = datetime.fromtimestamp(anchor, UTC).day
    day = datetime.fromtimestamp(at - time_of_day, UTC).date()
    start, end = (
        int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) + time_of_day
        for d in billing_period_of(day, anchor_day)
    )
    return start, end


def _indexed(params: dict[str, Any], name: str) -> list[dict[str, Any]]:
    """A form array (``name[0][…]``, ``name[1][…]``) as a list, in index order."""
    value = params.get(name) or {}
    if isinstance(value, list):
        return value
    if not isinstance(value, dict) or not all(k.isdigit() for k in value):
        raise StripeError(400, f"Invalid array: {name}.", param=name)
    return [value[k] for k in sorted(value, key=int)]


def _decimal(value: Any, param: str) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation as error:
        raise StripeError(400, f"Invalid decimal: {value}.", param=param) from error
    if not number.is_finite() or number < 0:
        raise StripeError(400, f"Invalid decimal: {value}.", param=param)
    return str(value)


def _flat_amount(tier: dict[str, Any], where: str) -> dict[str, Any]:
    """A tier's flat fee, as ``flat_amount`` or as ``flat_amount_decimal`` (which Stripe
    accepts only for a whole number of minor units)."""
    if "flat_amount_decimal" in tier:
        exact = _decimal(tier["flat_amount_decimal"], f"{where}[flat_amount_decimal]")
        number = Decimal(exact)
        if number != number.to_integral_value():  # Stripe: "representing an integer"
            raise StripeError(
                400,
                f"Invalid {where}[flat_amount_decimal]: {exact} must be a whole number of minor "
                "units.",
                param=f"{where}[flat_amount_decimal]",
            )
        return {"flat_amount": int(number), "flat_amount_decimal": exact}
    amount = int(tier.get("flat_amount", 0))
    return {"flat_amount": amount, "flat_amount_decimal": str(amount)}


def _transform_quantity(params: dict[str, Any]) -> dict[str, Any] | None:
    """Stripe's ``transform_quantity``: bill ``quantity / divide_by``, rounded up or down."""
    if "transform_quantity" not in params:
        return None
    transform = hash_param(params, "transform_quantity")
    try:
        divide_by = int(transform.get("divide_by", ""))
    except ValueError:
        divide_by = 0
    if divide_by < 1:
        raise StripeError(
            400,
            "transform_quantity[divide_by] must be a positive integer.",
            param="transform_quantity[divide_by]",
        )
    rounding = transform.get("round")
    if rounding not in ("up", "down"):
        raise StripeError(
            400, "transform_quantity[round] must be up or down.", param="transform_quantity[round]"
        )
    return {"divide_by": divide_by, "round": rounding}


def catalog_routes(
    store: LocalStripeStore, clock: Callable[[], int], route: RouteMaker, listing: Listing
) -> list[Route]:
    def found(kind: str, object_id: str, param: str) -> dict[str, Any]:
        obj = store.get(kind, object_id)
        if obj is None:
            raise StripeError(
                400, f"No such {kind}: '{object_id}'", code="resource_missing", param=param
            )
        return obj

    def in_path(kind: str, request: Request) -> dict[str, Any]:
        object_id = request.path_params["id"]
        obj = store.get(kind, object_id)
        if obj is None:
            raise not_found(kind, object_id)
        return obj

    # Products ---------------------------------------------------------------------------

    async def create_product(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.ProductCreateParams)
        product = {
            "id": string_param(params, "id") or new_id("prod"),
            "object": "product",
            "active": params.get("active", "true") != "false",
            "created": clock(),
            "description": string_param(params, "description"),
            "livemode": False,
            "metadata": metadata_param(params),
            "name": string_param(params, "name"),
        }
        if store.get("product", product["id"]) is not None:
            raise StripeError(400, f"Product already exists: {product['id']}", param="id")
        store.put(product)
        return product

    async def list_products(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.ProductListParams)
        return listing(request, store.list("product"), params, "product")

    async def get_product(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return in_path("product", request)

    # Prices -----------------------------------------------------------------------------

    async def create_price(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.PriceCreateParams)
        product = string_param(params, "product") or ""
        found("product", product, "product")
        scheme = string_param(params, "billing_scheme") or "per_unit"
        tiers = []
        if scheme == "tiered":
            mode = string_param(params, "tiers_mode")
            if mode not in ("graduated", "volume"):
                raise StripeError(
                    400,
                    "tiers_mode must be graduated or volume for tiered prices.",
                    param="tiers_mode",
                )
            raw_tiers = _indexed(params, "tiers")
            if not raw_tiers or raw_tiers[-1].get("up_to") != "inf":
                raise StripeError(
                    400, "The last tier of a tiered price must have up_to 'inf'.", param="tiers"
                )
            for index, tier in enumerate(raw_tiers):
                where = f"tiers[{index}]"
                up_to = tier.get("up_to")
                tiers.append(
                    {
                        "up_to": None if up_to == "inf" else int(up_to),
                        "unit_amount_decimal": _decimal(
                            tier.get("unit_amount_decimal", tier.get("unit_amount", "0")),
                            f"{where}[unit_amount_decimal]",
                        ),
                        **_flat_amount(tier, where),
                    }
                )
            unit_amount_decimal = None
        else:
            mode = None
            unit_amount_decimal = _decimal(
                params.get("unit_amount_decimal", params.get("unit_amount", "0")),
                "unit_amount_decimal",
            )
        recurring = hash_param(params, "recurring") if "recurring" in params else None
        transform = _transform_quantity(params) if scheme == "per_unit" else None
        price = {
            "id": new_id("price"),
            "object": "price",
            "active": True,
            "billing_scheme": scheme,
            "created": clock(),
            "currency": string_param(params, "currency"),
            "livemode": False,
            "lookup_key": string_param(params, "lookup_key"),
            "metadata": metadata_param(params),
            "product": product,
            "recurring": None
            if recurring is None
            else {
                "interval": recurring.get("interval"),
                "interval_count": int(recurring.get("interval_count", 1)),
                "usage_type": recurring.get("usage_type", "licensed"),
                "meter": recurring.get("meter"),
            },
            "tiers": tiers or None,
            "tiers_mode": mode,
            "transform_quantity": transform,
            "type": "recurring" if recurring else "one_time",
            "unit_amount": None
            if unit_amount_decimal is None or "." in unit_amount_decimal
            else int(unit_amount_decimal),
            "unit_amount_decimal": unit_amount_decimal,
        }
        store.put(price)
        return price

    async def list_prices(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.PriceListParams)
        prices = store.list("price")
        if "product" in params:
            prices = [p for p in prices if p["product"] == params["product"]]
        return listing(request, prices, params, "price")

    async def get_price(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return in_path("price", request)

    # Subscriptions ----------------------------------------------------------------------

    async def create_subscription(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.SubscriptionCreateParams)
        customer = string_param(params, "customer") or ""
        found("customer", customer, "customer")
        now = clock()
        subscription_id = new_id("sub")
        start = integer_param(params, "backdate_start_date", default=now)
        # Stripe anchors the billing cycle at the start unless told otherwise.
        anchor = integer_param(params, "billing_cycle_anchor", default=start)
        # Since API version 2025-03-31 the current period lives on each item, not on the
        # subscription.
        period_start, period_end = subscription_period(now, anchor)
        period = {"current_period_start": period_start, "current_period_end": period_end}
        items = []
        for index, item in enumerate(_indexed(params, "items")):
            price = found("price", str(item.get("price")), f"items[{index}][price]")
            item_object = {
                "id": new_id("si"),
                "object": "subscription_item",
                "created": now,
                **period,
                "metadata": {},
                "price": price,
                "quantity": int(item["quantity"]) if "quantity" in item else None,
                "subscription": subscription_id,
            }
            store.put(item_object)
            items.append(item_object)
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "billing_cycle_anchor": anchor,
            "canceled_at": None,
            "created": now,
            "currency": items[0]["price"]["currency"] if items else None,
            "customer": customer,
            "ended_at": None,
            "items": {
                "object": "list",
                "data": items,
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={subscription_id}",
            },
            "livemode": False,
            "metadata": metadata_param(params),
            "start_date": start,
            "status": "active",
        }
        store.put(subscription)
        return subscription

    async def list_subscriptions(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.SubscriptionListParams)
        subscriptions = store.list("subscription")
        if "customer" in params:
            subscriptions = [s for s in subscriptions if s["customer"] == params["customer"]]
        return listing(request, subscriptions, params, "subscription")

    async def get_subscription(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        return in_path("subscription", request)

    async def list_subscription_items(request: Request, params: dict[str, Any]) -> dict[str, Any]:
        check_parameters(params, core_params.SubscriptionItemListParams)
        subscription = string_param(params, "subscription") or ""
        found("subscription", subscription, "subscription")
        items = [i for i in store.list("subscription_item") if i["subscription"] == subscription]
        return listing(request, items, params, "subscription_item")

    return [
        *route("/v1/products", get=list_products, post=create_product),
        *route("/v1/products/{id}", get=get_product),
        *route("/v1/prices", get=list_prices, post=create_price),
        *route("/v1/prices/{id}", get=get_price),
        *route("/v1/subscriptions", get=list_subscriptions, post=create_subscription),
        *route("/v1/subscriptions/{id}", get=get_subscription),
        *route("/v1/subscription_items", get=list_subscription_items),
    ]
