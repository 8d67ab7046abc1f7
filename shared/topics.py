"""The topic catalogue: the one source of truth for topic names, keys, payloads and layout."""

from __future__ import annotations

from dataclasses import dataclass

from shared import events as ev


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    events: tuple[type[ev.Event], ...]
    description: str
    compacted: bool = False

    @property
    def typed(self) -> bool:
        return bool(self.events)


_SPECS = (
    TopicSpec("orders.raw", "channel:channel_order_id", (),
              "Raw channel order payloads (JSON, any shape); header `channel` names the channel"),
    TopicSpec("orders.submitted", "order_id", (ev.OrderSubmitted,),
              "Normalised orders, one per (channel, channel_order_id)"),
    TopicSpec("orders.dlq", "original key", (ev.RejectedMessage,),
              "Records any service could not process, with reason and original bytes"),
    TopicSpec("payments.events", "order_id",
              (ev.PaymentConfirmed, ev.PaymentFailed, ev.OrderCancelled),
              "Payment outcomes and cancellations from channels or the payment gateway"),
    TopicSpec("inventory.commands", "sku",
              (ev.ReserveStock, ev.ConfirmReservation, ev.ReleaseReservation, ev.CommitStock,
               ev.ExpireHolds),
              "Commands to the inventory service, serialised per SKU (ExpireHolds: its own)"),
    TopicSpec("stock.adjustments", "sku", (ev.StockAdjusted, ev.SafetyStockSet),
              "Stock movements from WMS, POS and operators"),
    TopicSpec("inventory.events", "order_id",
              (ev.StockReserved, ev.StockRejected, ev.ReservationReleased,
               ev.ReservationExpired, ev.ReservationConfirmed, ev.StockCommitted),
              "Inventory's answers to commands"),
    TopicSpec("stock.levels", "sku", (ev.StockLevel,),
              "Latest stock per SKU; channels read sellable/available here", compacted=True),
    TopicSpec("fulfilment.events", "order_id",
              (ev.Packed, ev.PickedUp, ev.InTransit, ev.OutForDelivery, ev.Delivered,
               ev.DeliveryException, ev.Returned),
              "Warehouse and carrier progress (callbacks and poller)"),
    TopicSpec("orders.status", "order_id", (ev.OrderStatusChanged,),
              "Public order status stream: one record per status change"),
    TopicSpec("notifications.outcomes", "order_id",
              (ev.NotificationAttempted, ev.NotificationDelivered, ev.NotificationFailed),
              "What the notifier attempted and what reached the customer"),
    TopicSpec("ops.alerts", "alert key", (ev.Alert,), "Alerts for the on-call operator"),
)

TOPICS: dict[str, TopicSpec] = {spec.name: spec for spec in _SPECS}

ORDERS_RAW = "orders.raw"
ORDERS_SUBMITTED = "orders.submitted"
ORDERS_DLQ = "orders.dlq"
PAYMENTS_EVENTS = "payments.events"
INVENTORY_COMMANDS = "inventory.commands"
STOCK_ADJUSTMENTS = "stock.adjustments"
INVENTORY_EVENTS = "inventory.events"
STOCK_LEVELS = "stock.levels"

#: Inventory's own changelog (counts, reservations, applied adjustments), compacted and
#: co-partitioned with inventory.commands. Internal to the service: not in the catalogue.
INVENTORY_STATE = "orderstream-inventory-state"
FULFILMENT_EVENTS = "fulfilment.events"
ORDERS_STATUS = "orders.status"
NOTIFICATIONS_OUTCOMES = "notifications.outcomes"
OPS_ALERTS = "ops.alerts"
