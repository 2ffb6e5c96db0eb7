"""A price-book charge as the Stripe price that charges the same for a period's total.

Stripe receives quantities, never amounts (docs/pricing.md, *What Stripe receives*): for its
invoice to match the rating, each metered subscription item's price must carry the charge's
model. This is that mapping, in one place, for the sample Stripe exports and for anything that
creates prices at Stripe. Charges no Stripe price expresses (an allowance on a volume or package
charge, a percentage) raise ``NotExpressibleAtStripe``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pricing.charges import Charge, Tier


class NotExpressibleAtStripe(ValueError):
    """The charge has no Stripe price that bills the same amount for every quantity."""


@dataclass(frozen=True)
class StripePriceFields:
    """The fields of a metered Stripe price (amounts in minor units, as decimal strings)."""

    billing_scheme: str  # per_unit | tiered
    unit_amount_decimal: str | None = None
    tiers_mode: str | None = None  # graduated | volume
    tiers: tuple[dict[str, Any], ...] = ()
    transform_quantity: dict[str, Any] | None = None

    @property
    def unit_amount(self) -> int | None:
        """Stripe's whole-cent ``unit_amount``: empty for a sub-cent or tiered price."""
        if self.unit_amount_decimal is None:
            return None
        return _whole_minor_units(self.unit_amount_decimal)

    def tiers_as_returned(self) -> list[dict[str, Any]]:
        """``tiers`` as Stripe returns them: ``up_to`` null for the last tier, and the whole-cent
        ``unit_amount`` / ``flat_amount`` beside the decimals (null when sub-cent)."""
        return [
            {
                "flat_amount": _whole_minor_units(tier["flat_amount_decimal"]),
                "flat_amount_decimal": tier["flat_amount_decimal"],
                "unit_amount": _whole_minor_units(tier["unit_amount_decimal"]),
                "unit_amount_decimal": tier["unit_amount_decimal"],
                "up_to": tier["up_to"],
            }
            for tier in self.tiers
        ]

    def create_params(self) -> dict[str, Any]:
        """These fields as ``prices.create`` takes them (add product, currency, recurring)."""
        params: dict[str, Any] = {"billing_scheme": self.billing_scheme}
        if self.unit_amount_decimal is not None:
            params["unit_amount_decimal"] = self.unit_amount_decimal
        if self.tiers_mode is not None:
            params["tiers_mode"] = self.tiers_mode
            params["tiers"] = [
                {**tier, "up_to": "inf" if tier["up_to"] is None else tier["up_to"]}
                for tier in self.tiers
            ]
        if self.transform_quantity is not None:
            params["transform_quantity"] = dict(self.transform_quantity)
        return params


def stripe_price_fields(charge: Charge) -> StripePriceFields:
    """The Stripe price that charges what ``charge`` charges for any period total."""
    model = charge.charge_model
    allowance = charge.included_units
    if model == "per_unit" and not allowance:
        return StripePriceFields("per_unit", unit_amount_decimal=_text(charge.unit_price_minor))
    if model == "package" and not allowance:
        return StripePriceFields(
            "per_unit",
            unit_amount_decimal=_text(charge.package_price_minor),
            transform_quantity={"divide_by": charge.package_size_units, "round": "up"},
        )
    if model == "per_unit":  # an allowance is a free first tier
        tiers = (Tier(allowance, Decimal(0)), Tier(None, _known(charge.unit_price_minor)))
        return StripePriceFields("tiered", tiers_mode="graduated", tiers=_stripe_tiers(tiers))
    if model == "graduated":
        shifted = [
            Tier(
                None if tier.up_to_units is None else tier.up_to_units + allowance,
                tier.unit_price_minor,
                tier.flat_fee_minor,
            )
            for tier in charge.tiers
        ]
        free = [Tier(allowance, Decimal(0))] if allowance else []
        return StripePriceFields(
            "tiered", tiers_mode="graduated", tiers=_stripe_tiers(free + shifted)
        )
    if model == "volume" and not allowance and not charge.tiers[0].flat_fee_minor:
        return StripePriceFields("tiered", tiers_mode="volume", tiers=_stripe_tiers(charge.tiers))
    if model == "volume" and not allowance:
        reason = (
            " whose first tier has a flat fee (Stripe puts a quantity of 0 in the first volume "
            "tier and charges its flat amount; the rating charges nothing for no usage)"
        )
    else:
        reason = f" with an allowance of {allowance} units" if allowance else ""
    raise NotExpressibleAtStripe(
        f"A {model} charge{reason} has no Stripe price that bills the same amount "
        "(docs/pricing.md, What Stripe receives); bill it as an invoice item instead."
    )


def _stripe_tiers(tiers: tuple[Tier, ...] | list[Tier]) -> tuple[dict[str, Any], ...]:
    for tier in tiers:
        if tier.flat_fee_minor != tier.flat_fee_minor.to_integral_value():
            raise NotExpressibleAtStripe(
                f"A tier's flat fee of {tier.flat_fee_minor} minor units is not a whole number "
                "of minor units, which Stripe's flat_amount_decimal must be; bill it as an "
                "invoice item instead."
            )
    return tuple(
        {
            "up_to": tier.up_to_units,  # None: Stripe's "inf"
            "unit_amount_decimal": _text(tier.unit_price_minor),
            "flat_amount_decimal": _text(tier.flat_fee_minor),
        }
        for tier in tiers
    )


def _known(value: Decimal | None) -> Decimal:
    if value is None:
        raise ValueError("the charge lacks a price its model needs")
    return value


def _text(value: Decimal | None) -> str:
    """A decimal as Stripe's ``*_decimal`` fields write it: plain digits, no exponent."""
    return format(_known(value).normalize(), "f")


def _whole_minor_units(amount: str) -> int | None:
    """A decimal amount as Stripe's integer field beside it: None when it has a fraction."""
    exact = Decimal(amount)
    return int(exact) if exact == exact.to_integral_value() else None
