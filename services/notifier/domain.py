"""Which status changes a customer hears about, and what the in-app message says. Pure."""

from __future__ import annotations

from dataclasses import dataclass

from shared.events import OrderStatus, OrderStatusChanged, derive_id

#: status -> (title, body); ``{channel_order_id}`` is filled per order.
IN_APP_TEMPLATES: dict[OrderStatus, tuple[str, str]] = {
    OrderStatus.RESERVED: (
        "订单已确认",
        "您的订单 {channel_order_id} 已确认，商品已为您保留。",
    ),
    OrderStatus.REJECTED: (
        "订单未能确认",
        "很抱歉，您的订单 {channel_order_id} 中有商品暂时缺货，订单未能确认。",
    ),
}


@dataclass(frozen=True)
class InAppMessage:
    message_id: str
    order_id: str
    customer_id: str
    status: OrderStatus
    title: str
    body: str


def in_app_message(change: OrderStatusChanged) -> InAppMessage | None:
    """The inbox message for a change, or None when customers are not told about it.

    The id is derived from (order, status, channel), so a replayed change makes no second
    message.
    """
    template = IN_APP_TEMPLATES.get(change.to_status)
    if template is None:
        return None
    title, body = template
    return InAppMessage(
        message_id=derive_id("notify", change.order_id, change.to_status, "inapp"),
        order_id=change.order_id,
        customer_id=change.customer_id,
        status=change.to_status,
        title=title,
        body=body.format(channel_order_id=change.channel_order_id),
    )
