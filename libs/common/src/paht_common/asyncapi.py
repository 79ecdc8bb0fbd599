"""AsyncAPI 3.0 description of every topic, generated from the event models.

``python -m paht_common.asyncapi > docs/asyncapi.json`` regenerates the committed document;
the contract tests fail when the two drift apart.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from paht_common.events import PAYLOAD_TYPES, Payload
from paht_common.topics import (
    DEFAULT_PARTITIONS,
    NOTIFY_EVENTS,
    REPORT_EVENTS,
    ROUTING_EVENTS,
    SLA_EVENTS,
    dead_letter,
)

PRODUCERS: dict[str, tuple[str, list[str]]] = {
    REPORT_EVENTS: (
        "intake",
        ["report.submitted.v1", "report.transitioned.v1", "report.media_added.v1"],
    ),
    ROUTING_EVENTS: ("routing", ["report.routed.v1"]),
    SLA_EVENTS: ("sla", ["sla.clocks_changed.v1", "sla.threshold_reached.v1"]),
    NOTIFY_EVENTS: ("notify", []),
}
CONSUMERS: dict[str, list[str]] = {
    REPORT_EVENTS: ["routing", "sla"],
    ROUTING_EVENTS: ["sla", "intake"],
    SLA_EVENTS: ["intake", "notify"],
    NOTIFY_EVENTS: [],
}

CE_HEADERS: dict[str, Any] = {
    "type": "object",
    "required": [
        "ce_id",
        "ce_source",
        "ce_specversion",
        "ce_type",
        "ce_time",
        "ce_subject",
        "content-type",
    ],
    "properties": {
        "ce_id": {"type": "string", "format": "uuid"},
        "ce_source": {"type": "string", "enum": ["/intake", "/routing", "/sla", "/notify"]},
        "ce_specversion": {"type": "string", "const": "1.0"},
        "ce_type": {
            "type": "string",
            "pattern": r"^vn\.[a-z0-9]+\.fieldreport\.[a-z_.]+\.v[0-9]+$",
        },
        "ce_time": {"type": "string", "format": "date-time"},
        "ce_subject": {"type": "string", "format": "uuid"},
        "ce_partitionkey": {"type": "string", "format": "uuid"},
        "ce_correlationid": {"type": "string"},
        "content-type": {"type": "string", "const": "application/json"},
    },
}


def _message_name(key: str) -> str:
    return key.replace(".", "_")


def document() -> dict[str, Any]:
    """The AsyncAPI 3.0 document as a dict."""
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for key, cls in sorted(PAYLOAD_TYPES.items()):
        schema = cls.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in schema.pop("$defs", {}).items():
            schemas[name] = sub
        schemas[cls.__name__] = schema
        messages[_message_name(key)] = {
            "name": key,
            "title": cls.__name__,
            "summary": (cls.__doc__ or "").strip(),
            "contentType": "application/json",
            "headers": {"$ref": "#/components/schemas/CloudEventHeaders"},
            "payload": {"$ref": f"#/components/schemas/{cls.__name__}"},
            "correlationId": {"location": "$message.header#/ce_correlationid"},
            "bindings": {
                "kafka": {"key": {"type": "string", "format": "uuid"}, "bindingVersion": "0.5.0"}
            },
        }
    schemas["CloudEventHeaders"] = CE_HEADERS
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for topic, (producer, keys) in PRODUCERS.items():
        name = topic.replace(".", "_")
        channels[name] = {
            "address": topic,
            "messages": {
                _message_name(k): {"$ref": f"#/components/messages/{_message_name(k)}"}
                for k in keys
            },
            "bindings": {
                "kafka": {
                    "topic": topic,
                    "partitions": DEFAULT_PARTITIONS,
                    "replicas": 1,
                    "bindingVersion": "0.5.0",
                }
            },
        }
        channels[name + "_dlq"] = {
            "address": dead_letter(topic),
            "description": "Records of the main topic no consumer could handle, with "
            "dlq_reason, dlq_consumer, dlq_topic, dlq_partition, dlq_offset "
            "headers added.",
        }
        if keys:
            operations[f"{producer}_sends_{name}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{name}"},
            }
        for consumer in CONSUMERS[topic]:
            operations[f"{consumer}_receives_{name}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{name}"},
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "PAHT events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 in Kafka binary mode; record key = report id.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def payload_models() -> dict[str, type[Payload]]:
    """Message name -> payload model."""
    return {_message_name(k): v for k, v in PAYLOAD_TYPES.items()}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n")
