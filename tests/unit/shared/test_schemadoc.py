"""Generated docs: one JSON Schema per event and a self-contained, stable AsyncAPI document."""

from __future__ import annotations

import json
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from shared import schemadoc
from shared.events import ALL_EVENTS
from shared.topics import TOPICS


@pytest.fixture(scope="module")
def out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out_dir = tmp_path_factory.mktemp("docs")
    schemadoc.write_docs(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def doc(out: Path) -> dict[str, Any]:
    return json.loads((out / "asyncapi.json").read_text(encoding="utf-8"))


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), f"{ref} points outside the document"
    node: Any = document
    for token in ref[2:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and token in node, f"{ref} does not resolve"
        node = node[token]
    return node


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}


def test_write_docs_writes_one_schema_per_event_type(tmp_path: Path) -> None:
    written = schemadoc.write_docs(tmp_path)
    schema_files = {p.name for p in (tmp_path / "schemas").iterdir()}
    assert schema_files == {f"{event_type}.json" for event_type in ALL_EVENTS}
    assert set(written) == {tmp_path / "schemas" / n for n in schema_files} | {
        tmp_path / "asyncapi.json"
    }


@pytest.mark.parametrize("event_type", sorted(ALL_EVENTS))
def test_event_schema_file_is_the_models_validation_schema(out: Path, event_type: str) -> None:
    schema = json.loads((out / "schemas" / f"{event_type}.json").read_text(encoding="utf-8"))
    assert schema == ALL_EVENTS[event_type].model_json_schema(mode="validation")
    assert schema["properties"]["event_type"]["const"] == event_type
    assert "occurred_at" in schema["properties"]


def test_asyncapi_document_is_asyncapi_3(doc: dict[str, Any]) -> None:
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "orderstream"
    assert doc["info"]["version"]
    assert doc["defaultContentType"] == "application/json"


def test_every_ref_in_asyncapi_resolves_inside_the_document(doc: dict[str, Any]) -> None:
    all_refs = list(refs(doc))
    assert all_refs
    for ref in all_refs:
        resolve(doc, ref)


def test_asyncapi_has_no_pydantic_defs_left(doc: dict[str, Any]) -> None:
    text = json.dumps(doc)
    assert "$defs" not in text
    assert {"Customer", "OrderLine", "Channel", "OrderStatus"} <= set(doc["components"]["schemas"])


def test_asyncapi_channels_are_the_catalogue_topics(doc: dict[str, Any]) -> None:
    addresses = [channel["address"] for channel in doc["channels"].values()]
    assert sorted(addresses) == sorted(TOPICS)
    for channel in doc["channels"].values():
        assert channel["bindings"]["kafka"]["topic"] == channel["address"]
        assert channel["description"].startswith(TOPICS[channel["address"]].description)


def test_only_compacted_topics_are_marked_compacted(doc: dict[str, Any]) -> None:
    compacted = {c["address"] for c in doc["channels"].values() if c["x-compacted"]}
    assert compacted == {name for name, spec in TOPICS.items() if spec.compacted}
    for channel in doc["channels"].values():
        config = channel["bindings"]["kafka"].get("topicConfiguration", {})
        assert (config.get("cleanup.policy") == ["compact"]) == channel["x-compacted"]


def test_channel_messages_are_the_events_the_topic_carries(doc: dict[str, Any]) -> None:
    for channel in doc["channels"].values():
        spec = TOPICS[channel["address"]]
        if spec.typed:
            expected = {m.model_fields["event_type"].default for m in spec.events}
            assert set(channel["messages"]) == expected
        for ref in refs(channel["messages"]):
            message = resolve(doc, ref)
            key = message["bindings"]["kafka"]["key"]
            assert key["type"] == "string"
            assert spec.key in key["description"]


def test_every_event_message_payload_is_its_component_schema(doc: dict[str, Any]) -> None:
    messages = doc["components"]["messages"]
    for event_type in ALL_EVENTS:
        payload = resolve(doc, messages[event_type]["payload"]["$ref"])
        assert payload["properties"]["event_type"]["const"] == event_type


def test_raw_orders_payload_is_an_untyped_object_with_a_channel_header(
    doc: dict[str, Any]
) -> None:
    (channel,) = [c for c in doc["channels"].values() if c["address"] == "orders.raw"]
    (ref,) = list(refs(channel["messages"]))
    message = resolve(doc, ref)
    assert message["payload"]["type"] == "object"
    assert "$ref" not in message["payload"]
    assert message["payload"]["description"]
    assert "channel" in message["headers"]["properties"]


def test_operations_receive_from_every_channel_with_its_own_messages(
    doc: dict[str, Any]
) -> None:
    channel_refs = set()
    for operation in doc["operations"].values():
        assert operation["action"] in {"send", "receive"}
        channel_ref = operation["channel"]["$ref"]
        channel_refs.add(channel_ref)
        for message in operation["messages"]:
            assert message["$ref"].startswith(channel_ref + "/messages/")
    assert channel_refs == {f"#/channels/{cid}" for cid in doc["channels"]}


def test_second_run_produces_byte_identical_files(tmp_path: Path) -> None:
    schemadoc.write_docs(tmp_path)
    first = snapshot(tmp_path)
    schemadoc.write_docs(tmp_path)
    assert snapshot(tmp_path) == first
    assert len(first) == len(ALL_EVENTS) + 1


def test_output_is_sorted_indented_and_ends_with_a_newline(out: Path) -> None:
    for path in [out / "asyncapi.json", *sorted((out / "schemas").iterdir())]:
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True,
                                  ensure_ascii=False) + "\n"


def test_version_falls_back_when_the_package_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(schemadoc.metadata, "version", not_installed)
    assert schemadoc.package_version() == "0.0.0"
    assert schemadoc.asyncapi_document()["info"]["version"] == "0.0.0"


def test_version_comes_from_package_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schemadoc.metadata, "version", lambda name: "9.8.7")
    assert schemadoc.asyncapi_document()["info"]["version"] == "9.8.7"


def test_main_writes_to_out_and_prints_the_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert schemadoc.main(["--out", str(tmp_path / "site")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert str(tmp_path / "site" / "asyncapi.json") in printed
    assert len(printed) == len(ALL_EVENTS) + 1
    assert all(Path(line).is_file() for line in printed)


def test_committed_docs_match_the_models(tmp_path: Path) -> None:
    """docs/ is generated; a model change without `make docs` fails here."""
    committed = Path(__file__).parents[3] / "docs"
    schemadoc.write_docs(tmp_path)
    fresh = {p.relative_to(tmp_path): p.read_text() for p in tmp_path.rglob("*.json")}
    stored = {p.relative_to(committed): p.read_text() for p in committed.rglob("*.json")}
    assert sorted(fresh) == sorted(stored), "run `make docs`"
    stale = [str(name) for name in fresh if fresh[name] != stored[name]]
    assert not stale, f"run `make docs`: {stale}"
