"""From a planned notification to the rows the loop writes, and from a delivery row to what a
provider is sent. Pure; the words come from the template catalogue."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from services.notifier import domain
from services.notifier.providers.base import Outgoing
from services.notifier.store import NewDelivery, PlanRow


class Rendered(Protocol):
    title: str | None
    subject: str | None
    text: str
    params: Mapping[str, str]
    template_codes: Mapping[str, str]
    url: str | None


class Templates(Protocol):
    def render(self, trigger: str, channel: str, locale: str | None,
               variables: Mapping[str, Any]) -> Rendered: ...


def payload(rendered: Rendered, recipient: str) -> dict[str, Any]:
    """What a delivery row keeps of its rendered message (the provider is chosen later)."""
    return {"recipient": recipient, "title": rendered.title or "",
            "subject": rendered.subject or "",
            "text": rendered.text, "params": dict(rendered.params),
            "templates": dict(rendered.template_codes), "url": rendered.url}


def plan_row(planned: domain.Planned, templates: Templates) -> PlanRow:
    """Render the message for every channel of the plan (a later failover then only copies
    its words) and create the deliveries of the channels that start now. The in-app message
    is written to the inbox at once: the inbox row is its delivery record."""
    payloads = {
        channel: payload(templates.render(planned.trigger, channel, planned.locale,
                                          planned.variables), planned.recipients[channel])
        for channel in (*planned.chain, domain.INAPP)
    }
    status = planned.status.value
    deliveries = tuple(
        NewDelivery(
            message_id=domain.message_id(planned.order_id, status, channel),
            notification_id=planned.notification_id, order_id=planned.order_id,
            status=status, channel=channel, recipient=planned.recipients[channel],
            payload=payloads[channel], state="pending", due_at=planned.at)
        for channel in planned.started if channel != domain.INAPP)
    inapp = payloads[domain.INAPP]
    return PlanRow(
        notification_id=planned.notification_id, order_id=planned.order_id,
        customer_id=planned.customer_id, status=status, trigger=planned.trigger,
        policy=planned.policy, chain=planned.chain, payloads=payloads, vip=planned.vip,
        at=planned.at, followup_due=planned.followup_due, deliveries=deliveries,
        inbox=(domain.message_id(planned.order_id, status, domain.INAPP), inapp["title"],
               inapp["text"]))


def failover_delivery(notification_id: str, order_id: str, status: str, channel: str,
                      payloads: Mapping[str, Any], due_at: Any) -> NewDelivery:
    words = payloads[channel]
    return NewDelivery(
        message_id=domain.message_id(order_id, status, channel),
        notification_id=notification_id, order_id=order_id, status=status, channel=channel,
        recipient=words["recipient"], payload=dict(words), state="pending", due_at=due_at)


def outgoing(message_id: str, channel: str, provider: str, words: Mapping[str, Any]
             ) -> Outgoing:
    """The message for ``provider``: SMS providers each have their own template code for the
    same approved text; WeChat and e-mail have one."""
    templates: Mapping[str, str] = words.get("templates") or {}
    return Outgoing(
        message_id=message_id, recipient=words["recipient"],
        template=templates.get(provider) or templates.get(channel) or "",
        params=dict(words.get("params") or {}), subject=words.get("subject") or "",
        text=words.get("text") or "", url=words.get("url"))


def mask(channel: str, recipient: str) -> str:
    """A recipient as logs and outcome events show it."""
    if channel == "sms":
        return recipient[:5] + "****" + recipient[-2:] if len(recipient) > 7 else "***"
    if channel == "email":
        local, _, host = recipient.partition("@")
        return f"{local[:1]}***@{host}"
    return recipient[:4] + "***" if len(recipient) > 4 else "***"
