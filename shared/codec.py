"""The one codec: pydantic events to JSON bytes and back, with readable decode errors."""

from __future__ import annotations

import json
from functools import cache
from typing import Annotated, Any, Union

from pydantic import Field, TypeAdapter, ValidationError

from shared.events import Event
from shared.topics import TOPICS


class InvalidRecord(ValueError):
    """A record that is not valid input for its consumer; carries what the DLQ record needs."""

    def __init__(self, reason: str, error: str, field_errors: tuple[dict[str, Any], ...] = ()):
        super().__init__(f"{reason}: {error}")
        self.reason = reason
        self.error = error
        self.field_errors = field_errors


def encode(event: Event) -> bytes:
    return event.model_dump_json().encode()


@cache
def _adapter(topic: str) -> TypeAdapter[Any]:
    spec = TOPICS[topic]
    if not spec.events:
        raise KeyError(f"topic {topic!r} carries no typed events")
    if len(spec.events) == 1:
        return TypeAdapter(spec.events[0])
    union = Union[spec.events]  # noqa: UP007 - a runtime-built union needs the subscript form
    return TypeAdapter(Annotated[union, Field(discriminator="event_type")])


def field_errors(exc: ValidationError) -> tuple[dict[str, Any], ...]:
    """Validation errors as JSON-safe dicts: location, message, type (no input echo)."""
    return tuple(
        {"loc": ".".join(str(p) for p in e["loc"]), "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False, include_input=False)
    )


def parse_json(data: bytes | None) -> Any:
    """UTF-8 JSON bytes to a JSON value, or an InvalidRecord saying why not."""
    if data is None:
        raise InvalidRecord("empty_value", "the record has no value (tombstone)")
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise InvalidRecord("invalid_encoding", f"value is not UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise InvalidRecord("invalid_json", f"value is not JSON: {exc}") from exc
    except RecursionError as exc:
        raise InvalidRecord("invalid_json", "value is nested too deeply") from exc


def decode(topic: str, data: bytes | None) -> Event:
    """Decode a record of catalogue topic ``topic`` into its event model."""
    if data is not None:
        try:  # the fast path: pydantic parses and validates the bytes in one go
            return _adapter(topic).validate_json(data)
        except ValidationError:
            pass  # the path below says exactly what is wrong
    payload = parse_json(data)
    if not isinstance(payload, dict):
        raise InvalidRecord("invalid_event",
                            f"expected a JSON object, got {type(payload).__name__}")
    known = {m.model_fields["event_type"].default for m in TOPICS[topic].events}
    event_type = payload.get("event_type")
    if len(known) > 1 and (not isinstance(event_type, str) or event_type not in known):
        raise InvalidRecord(
            "unknown_event_type",
            f"event_type {event_type!r} is not one of {sorted(known)} on {topic}",
        )
    try:
        return _adapter(topic).validate_python(payload)
    except ValidationError as exc:
        raise InvalidRecord(
            "invalid_event", f"{exc.error_count()} field error(s) for {topic}",
            field_errors(exc),
        ) from exc
