"""Generates the JSON Schemas and the AsyncAPI 3.0 document of every topic from the event models."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from shared.events import ALL_EVENTS, Channel, Event
from shared.topics import TOPICS, TopicSpec

ASYNCAPI_VERSION = "3.0.0"
KAFKA_BINDING_VERSION = "0.5.0"
CONTENT_TYPE = "application/json"
#: Schemas are what producers must satisfy, so they describe validation input.
SCHEMA_MODE = "validation"
RAW_MESSAGE = "RawOrder"

_DEFS_PREFIX = "#/$defs/"
_COMPONENTS_PREFIX = "#/components/schemas/"


def package_version() -> str:
    try:
        return metadata.version("orderstream")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def event_schema(model: type[Event]) -> dict[str, Any]:
    """The standalone JSON Schema of one event model (its ``$defs`` included)."""
    return model.model_json_schema(mode=SCHEMA_MODE)


def _rewrite_refs(node: Any) -> Any:
    """A copy of ``node`` with every ``#/$defs/X`` reference pointing at components.schemas."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith(_DEFS_PREFIX):
                out[key] = _COMPONENTS_PREFIX + value[len(_DEFS_PREFIX):]
            else:
                out[key] = _rewrite_refs(value)
        return out
    if isinstance(node, list):
        return [_rewrite_refs(item) for item in node]
    return node


def _add_component(schemas: dict[str, Any], name: str, schema: dict[str, Any]) -> None:
    if name in schemas and schemas[name] != schema:
        raise ValueError(f"two different schemas are both named {name!r}")
    schemas[name] = schema


def component_schemas() -> dict[str, Any]:
    """Every event schema plus the definitions they share, with refs local to the document."""
    schemas: dict[str, Any] = {}
    for event_type, model in ALL_EVENTS.items():
        schema = event_schema(model)
        for name, definition in schema.pop("$defs", {}).items():
            _add_component(schemas, name, _rewrite_refs(definition))
        _add_component(schemas, event_type, _rewrite_refs(schema))
    return schemas


def channel_id(topic: str) -> str:
    """A channel/operation identifier for a topic name (``orders.raw`` -> ``orders_raw``)."""
    return topic.replace(".", "_").replace("-", "_")


def _key_schema(specs: Sequence[TopicSpec]) -> dict[str, Any]:
    descriptions = sorted({f"{spec.name}: {spec.key}" for spec in specs})
    return {"type": "string", "description": "Record key. " + "; ".join(descriptions)}


def _first_line(doc: str | None) -> str | None:
    if not doc:
        return None
    return doc.strip().splitlines()[0].strip() or None


def _event_message(
    event_type: str, model: type[Event], specs: Sequence[TopicSpec]
) -> dict[str, Any]:
    message: dict[str, Any] = {
        "name": event_type,
        "title": event_type,
        "contentType": CONTENT_TYPE,
        "payload": {"$ref": _COMPONENTS_PREFIX + event_type},
        "bindings": {
            "kafka": {"key": _key_schema(specs), "bindingVersion": KAFKA_BINDING_VERSION},
        },
    }
    summary = _first_line(model.__doc__)  # a class's __doc__ is not inherited
    if summary:
        message["summary"] = summary
    return message


def _raw_message(spec: TopicSpec) -> dict[str, Any]:
    return {
        "name": RAW_MESSAGE,
        "title": "Raw channel order",
        "summary": "A sales channel's order exactly as the channel sent it.",
        "contentType": CONTENT_TYPE,
        "headers": {
            "type": "object",
            "properties": {
                "channel": {
                    "type": "string",
                    "enum": [c.value for c in Channel],
                    "description": "The sales channel; when absent, the key's prefix "
                    "before ':' names it",
                },
            },
        },
        "payload": {
            "type": "object",
            "description": "The channel's own order JSON (any shape); the ingestion service "
            "normalises it into OrderSubmitted using the adapter for the `channel` header.",
        },
        "bindings": {
            "kafka": {"key": _key_schema([spec]), "bindingVersion": KAFKA_BINDING_VERSION},
        },
    }


def _event_type(model: type[Event]) -> str:
    return model.model_fields["event_type"].default


def asyncapi_document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document for the whole topic catalogue."""
    carriers: dict[str, list[TopicSpec]] = {}
    for spec in TOPICS.values():
        for model in spec.events:
            carriers.setdefault(_event_type(model), []).append(spec)

    messages = {
        event_type: _event_message(event_type, model, carriers.get(event_type, []))
        for event_type, model in ALL_EVENTS.items()
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for spec in TOPICS.values():
        cid = channel_id(spec.name)
        if spec.typed:
            names = [_event_type(model) for model in spec.events]
        else:
            names = [RAW_MESSAGE]
            messages[RAW_MESSAGE] = _raw_message(spec)
        kafka: dict[str, Any] = {"topic": spec.name, "bindingVersion": KAFKA_BINDING_VERSION}
        if spec.compacted:
            kafka["topicConfiguration"] = {"cleanup.policy": ["compact"]}
        channels[cid] = {
            "address": spec.name,
            "description": f"{spec.description}. Key: {spec.key}.",
            "messages": {name: {"$ref": f"#/components/messages/{name}"} for name in names},
            "bindings": {"kafka": kafka},
            "x-compacted": spec.compacted,
        }
        operations[f"receive_{cid}"] = {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{cid}"},
            "summary": f"Records on {spec.name}",
            "messages": [{"$ref": f"#/channels/{cid}/messages/{name}"} for name in names],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "orderstream",
            "version": package_version(),
            "description": "Kafka topics of orderstream: multi-channel orders, stock, "
            "fulfilment and customer notifications. Every typed payload is JSON (UTF-8) "
            "validated by the schema of its `event_type`.",
        },
        "defaultContentType": CONTENT_TYPE,
        "channels": channels,
        "operations": operations,
        "components": {"schemas": component_schemas(), "messages": messages},
    }


def dumps(document: Any) -> str:
    """Deterministic JSON text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _write(path: Path, document: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="\n") as fh:
        fh.write(dumps(document))
    return path


def write_docs(out_dir: Path) -> list[Path]:
    """Write ``schemas/<EventType>.json`` and ``asyncapi.json`` under ``out_dir``."""
    out_dir = Path(out_dir)
    written = [
        _write(out_dir / "schemas" / f"{event_type}.json", event_schema(model))
        for event_type, model in sorted(ALL_EVENTS.items())
    ]
    written.append(_write(out_dir / "asyncapi.json", asyncapi_document()))
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="orderstream docs", description="Write JSON Schema and AsyncAPI for every topic."
    )
    parser.add_argument("--out", default="docs", help="output directory (default: docs)")
    args = parser.parse_args(argv)
    for path in write_docs(Path(args.out)):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
