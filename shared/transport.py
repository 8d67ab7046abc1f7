"""Faust's aiokafka transport with two settings Faust does not expose: producer idempotence
outside transactions, and the consumer's fetch wait."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from faust.transport.drivers import aiokafka as driver

log = logging.getLogger(__name__)


class IdempotentProducer(driver.Producer):
    """Faust turns idempotence on only inside transactions; we want it for every send, so a
    producer retry after a lost ack cannot write a record twice."""

    def _settings_extra(self) -> dict[str, Any]:
        return {**super()._settings_extra(), "acks": "all", "enable_idempotence": True}


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    fetch_max_wait_ms: ClassVar[int] = 1500

    def _create_worker_consumer(self, transport: driver.Transport) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes a fixed 1500 ms; aiokafka reads this attribute when it starts.
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer


def transport_class(*, fetch_max_wait_ms: int) -> type[driver.Transport]:
    """A Transport class whose consumers wait at most ``fetch_max_wait_ms`` per fetch."""
    thread = type("ConsumerThread", (_ConsumerThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
            return thread(self, loop=self.loop, beacon=self.beacon)

    return type("Transport", (driver.Transport,), {"Consumer": Consumer})


class App(faust.App):
    """A Faust app whose transports are of class :attr:`transport_type`.

    Faust builds the consumer transport at import (declaring topics touches it) but the
    producer only when the worker starts, so :meth:`use_idempotent_producer` can still
    choose the producer after probing the broker.
    """

    transport_type: type[driver.Transport] = driver.Transport

    def _new_transport(self) -> driver.Transport:
        return self.transport_type(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> driver.Transport:
        return self.transport_type(self.conf.broker_producer, self)

    def use_idempotent_producer(self) -> None:
        if self._producer is not None:
            raise RuntimeError("the producer already exists; choose before the worker starts")
        self.transport.Producer = IdempotentProducer


async def supports_idempotence(bootstrap: list[str], *, timeout: float = 15.0) -> bool:
    """Whether the broker grants producer ids (Apache Kafka does; the embedded broker
    answers InitProducerId with an error)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True,
                                acks="all", request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(producer.start(), timeout)
        return True
    except (KafkaError, TimeoutError) as exc:
        log.info("event=idempotence_unavailable error=%r", exc)
        return False
    finally:
        await producer.stop()
