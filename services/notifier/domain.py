"""Who hears about which status change, on which channels, and with which words. Pure: the
order projection, the triggers, the channel plan and the template variables.

The notifier keeps its own projection of ``orders.submitted`` (:class:`OrderView`: contact,
locale, zone, VIP, lines, sales channel), keyed and partitioned like ``orders.status``, so
one worker sees an order and its changes in order. A change that arrives before its order
(the two topics have no order between them) waits in :class:`Waiting` and is told when the
order comes. Each told change becomes one :class:`Planned` notification: the logical message
for (order, status), with one delivery per customer channel, each sent at most once however
often ``orders.status`` is replayed (their ids come from (order, status, channel)).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict

from shared.events import OrderStatus, OrderStatusChanged, OrderSubmitted, derive_id

S = OrderStatus

TRIGGERS = ("confirmation", "shipped", "out_for_delivery", "delivered", "rejected",
            "cancelled")
#: channels that reach the customer outside the shop's own app, in the default failover order
EXTERNAL = ("wechat", "sms", "email")
INAPP = "inapp"
CHANNELS = (*EXTERNAL, INAPP)

#: the trigger of each status (confirmation: RESERVED or PAID, as the sales channel says)
_STATUS_TRIGGER: dict[OrderStatus, str] = {
    S.PICKED_UP: "shipped", S.OUT_FOR_DELIVERY: "out_for_delivery", S.DELIVERED: "delivered",
    S.REJECTED: "rejected", S.CANCELLED: "cancelled",
}
#: status domain's wording of a rejection's detail (services/status/domain.py)
_OUT_OF_STOCK = "out of stock: "
#: a mobile number we can text: E.164, or a Chinese mobile number without its country code
_MOBILE = re.compile(r"^(\+[1-9]\d{7,14}|1[3-9]\d{9})$")
_EMAIL = re.compile(r"^[^@\s*]+@[^@\s*]+\.[^@\s*]+$")
_NICKNAME_FALLBACK = {"zh": "顾客", "en": "customer"}


# --- the projection ----------------------------------------------------------------------


class OrderView(BaseModel):
    """What the notifier needs of an order to tell its customer about it."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    channel: str
    channel_order_id: str
    customer_id: str
    nickname: str | None = None
    phone: str | None = None
    email: str | None = None
    wechat_openid: str | None = None
    locale: str = "zh-CN"
    time_zone: str = "Asia/Shanghai"
    vip: bool = False
    lines: tuple[tuple[str, int], ...] = ()  # (sku, quantity)
    paid: bool = False
    placed_at: datetime | None = None
    #: statuses already planned (a replayed change is skipped before any work)
    told: tuple[str, ...] = ()


class Waiting(BaseModel):
    """Status changes for an order not seen yet, in arrival order (event JSON)."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    changes: tuple[dict[str, Any], ...] = ()
    since: datetime | None = None


State = OrderView | Waiting


def view_of(order: OrderSubmitted) -> OrderView:
    c = order.customer
    return OrderView(
        order_id=order.order_id, channel=order.channel.value,
        channel_order_id=order.channel_order_id, customer_id=c.customer_id,
        nickname=c.nickname, phone=c.phone, email=c.email, wechat_openid=c.wechat_openid,
        locale=c.locale, time_zone=c.time_zone, vip=c.vip,
        lines=tuple((ln.sku, ln.quantity) for ln in order.lines), paid=order.paid,
        placed_at=order.placed_at)


def load_state(data: Mapping[str, Any]) -> State:
    return Waiting.model_validate(data) if "changes" in data else OrderView.model_validate(data)


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    """How a trigger uses the customer's channels: ``all`` sends on every one at once (the
    source's advice for confirmations), ``failover`` on the first, then the next when one
    fails, throttles, gets a negative receipt or no receipt in time. The in-app inbox is
    always written as well: it is the order's message record, not a way to reach anyone."""

    kind: Literal["all", "failover"]
    channels: tuple[str, ...] = EXTERNAL


DEFAULT_POLICIES: dict[str, Policy] = {
    "confirmation": Policy("all"),
    "shipped": Policy("failover"),
    "out_for_delivery": Policy("failover"),
    "delivered": Policy("failover", ("wechat", "email", "sms")),
    "rejected": Policy("all"),
    "cancelled": Policy("failover"),
}


@dataclass(frozen=True)
class Rules:
    #: sales channel -> "reserved" or "paid": when its orders are confirmed
    confirm_on: Mapping[str, str] = field(default_factory=dict)
    confirm_default: str = "reserved"
    enabled: frozenset[str] = frozenset(TRIGGERS)
    policies: Mapping[str, Policy] = field(default_factory=lambda: dict(DEFAULT_POLICIES))
    #: a VIP whom no channel reached this long after the change gets a follow-up task
    vip_deadline: timedelta = timedelta(minutes=30)
    #: orders confirmed before the cutoff (customer's local time) ship the same day by
    #: ``ship_at``; later ones the next day
    ship_cutoff: time = time(16, 0)
    ship_at: time = time(17, 0)
    after_sales_url: str = "https://shop.example.com/after-sales"
    #: channels with a provider configured: the others are left out of every plan
    available: frozenset[str] = frozenset(EXTERNAL)


def trigger_for(status: OrderStatus, sales_channel: str, rules: Rules) -> str | None:
    if status in (S.RESERVED, S.PAID):
        on = rules.confirm_on.get(sales_channel, rules.confirm_default)
        trigger = "confirmation" if status == (S.RESERVED if on == "reserved" else S.PAID) \
            else None
    else:
        trigger = _STATUS_TRIGGER.get(status)
    return trigger if trigger in rules.enabled else None


def recipients(view: OrderView) -> dict[str, str]:
    """The customer's reachable channels and their addresses: a masked phone number or
    e-mail address (channels often hide them: 138****8000) reaches no one."""
    found = {INAPP: view.customer_id}
    phone = (view.phone or "").replace(" ", "").replace("-", "")
    if _MOBILE.match(phone):
        found["sms"] = phone if phone.startswith("+") else "+86" + phone
    if view.email and _EMAIL.match(view.email.strip()):
        found["email"] = view.email.strip()
    if view.wechat_openid:
        found["wechat"] = view.wechat_openid
    return found


# --- the plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Planned:
    """The logical message for (order, status): its channels in policy order (``chain``,
    only those the customer can be reached on), the ones to start now, and what to say."""

    notification_id: str
    order_id: str
    customer_id: str
    status: OrderStatus
    trigger: str
    policy: str
    chain: tuple[str, ...]
    started: tuple[str, ...]
    recipients: Mapping[str, str]
    locale: str
    variables: Mapping[str, Any]
    vip: bool
    at: datetime
    followup_due: datetime | None


def message_id(order_id: str, status: OrderStatus | str, channel: str) -> str:
    """The one logical message for (order, status, channel): the idempotency key every
    provider is given, and the primary key of its delivery row."""
    return derive_id("notify", order_id, status, channel)


def plan(view: OrderView, change: OrderStatusChanged, rules: Rules,
         names: Mapping[str, str] | None = None, tips: list[str] | None = None
         ) -> Planned | None:
    """The notification for ``change``, or None when customers are not told about it.
    ``names`` maps SKUs to product names and ``tips`` are the order's product tips (both
    from the tips catalogue, in the customer's locale)."""
    trigger = trigger_for(change.to_status, view.channel, rules)
    if trigger is None:
        return None
    policy = rules.policies.get(trigger, DEFAULT_POLICIES[trigger])
    reach = recipients(view)
    chain = tuple(c for c in policy.channels
                  if c in reach and c in rules.available and c != INAPP)
    started = chain if policy.kind == "all" else chain[:1]
    return Planned(
        notification_id=derive_id("notification", view.order_id, change.to_status),
        order_id=view.order_id, customer_id=view.customer_id, status=change.to_status,
        trigger=trigger, policy=policy.kind, chain=chain, started=(*started, INAPP),
        recipients=reach, locale=view.locale,
        variables=variables(view, change, rules, names or {}, tips or []),
        vip=view.vip, at=change.at,
        followup_due=change.at + rules.vip_deadline if view.vip and chain else None)


def variables(view: OrderView, change: OrderStatusChanged, rules: Rules,
              names: Mapping[str, str], tips: list[str]) -> dict[str, Any]:
    """Exactly the variables every template is rendered with (services/notifier/templates)."""
    lang = "en" if view.locale.lower().startswith("en") else "zh"
    detail = change.detail or ""
    out_of_stock = ([names.get(s, s) for s in detail[len(_OUT_OF_STOCK):].split(", ") if s]
                    if detail.startswith(_OUT_OF_STOCK) else [])
    return {
        "nickname": view.nickname or _NICKNAME_FALLBACK[lang],
        "order_no": view.channel_order_id,
        "channel": view.channel,
        "status": change.to_status.value,
        "items": [{"sku": sku, "name": names.get(sku, sku), "quantity": qty}
                  for sku, qty in view.lines],
        "ship_by": ship_by(change.at, view.time_zone, view.locale, rules),
        "tips": list(tips),
        "after_sales_url": rules.after_sales_url,
        "carrier": change.carrier,
        "tracking_number": change.tracking_number,
        "out_of_stock": out_of_stock,
        "refund": change.to_status == S.CANCELLED and view.paid,
    }


def zone_of(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("Asia/Shanghai")


def ship_by(at: datetime, zone: str, locale: str, rules: Rules) -> str:
    """When the order ships, in the customer's zone and words: confirmed before the cutoff,
    today at ``ship_at``; otherwise tomorrow. Counted from the change, not from now, so a
    replay says the same."""
    local = at.astimezone(zone_of(zone))
    day = local.date() if local.time() < rules.ship_cutoff else local.date() + timedelta(1)
    hour = rules.ship_at.strftime("%H:%M")
    offset = (day - local.date()).days
    if locale.lower().startswith("en"):
        when = {0: "today", 1: "tomorrow"}.get(offset, day.strftime("%-d %b"))
        return f"{when} at {hour}"
    when = {0: "今天", 1: "明天"}.get(offset, f"{day.month}月{day.day}日")
    return f"{when}{hour}"


# --- applying inputs ---------------------------------------------------------------------


@dataclass
class Outcome:
    """What one input did: the projection's new value and the notifications to plan."""

    state: State | None
    told: list[tuple[OrderView, OrderStatusChanged]] = field(default_factory=list)


def on_submitted(state: State | None, order: OrderSubmitted) -> Outcome:
    if isinstance(state, OrderView):
        return Outcome(state)  # a replayed submission
    view = view_of(order)
    outcome = Outcome(view)
    for data in state.changes if isinstance(state, Waiting) else ():
        change = OrderStatusChanged.model_validate(data)
        _tell(outcome, change)
    return outcome


def on_change(state: State | None, change: OrderStatusChanged, *, max_waiting: int = 50
              ) -> Outcome:
    """A status change: told now if the order is known, else it waits for the order."""
    if isinstance(state, OrderView):
        outcome = Outcome(state)
        _tell(outcome, change)
        return outcome
    waiting = state.changes if isinstance(state, Waiting) else ()
    if any(c.get("event_id") == change.event_id for c in waiting):
        return Outcome(state)
    if len(waiting) >= max_waiting:
        raise ValueError(f"order {change.order_id} has {len(waiting)} changes waiting for "
                         f"its submission")
    return Outcome(Waiting(order_id=change.order_id,
                           changes=(*waiting, change.model_dump(mode="json")),
                           since=state.since if isinstance(state, Waiting) else change.at))


def _tell(outcome: Outcome, change: OrderStatusChanged) -> None:
    view = outcome.state
    assert isinstance(view, OrderView)
    if change.to_status.value in view.told:
        return
    paid = view.paid or change.to_status == S.PAID
    view = view.model_copy(update={"told": (*view.told, change.to_status.value), "paid": paid})
    outcome.state = view
    outcome.told.append((view, change))
