"""Webhook subscriptions (DESIGN §9): create, list, delete, and their delivery log.
`/webhook/register` and `/webhook/unregister` are kept as aliases of the original routes."""

from __future__ import annotations

from typing import Any

import marshmallow
from flask import Blueprint, Response, jsonify

from ..errors import ValidationError
from ..schemas import WebhookIdInput, WebhookInput
from ..services import services
from . import json_body, owner

bp = Blueprint("webhooks", __name__)
DELIVERY_FIELDS = ("id", "task_id", "event_id", "event_type", "status", "attempts", "last_status", "last_error",
                   "next_attempt_at", "created_at", "delivered_at")


def public(hook: dict[str, Any], with_secret: bool = False) -> dict[str, Any]:
    """A subscription as shown to its owner; the secret only in the answer that created it."""
    out = {k: hook[k] for k in ("id", "url", "events", "task_id", "created_at")}
    if with_secret:
        out["secret"] = hook["secret"]
    return out


def load(schema: type[marshmallow.Schema]) -> dict[str, Any]:
    try:
        return schema().load(json_body(allow_empty=False))
    except marshmallow.ValidationError as exc:
        raise ValidationError.from_marshmallow(exc) from None


@bp.post("/webhooks")
@bp.post("/webhook/register")
def create():
    args = load(WebhookInput)
    svc = services()
    if args["task_id"]:
        svc.tasks.get(args["task_id"], owner())
    hook = svc.webhooks.subscribe(owner(), args["url"], args["events"], args["task_id"], args["secret"])
    return jsonify(public(hook, with_secret=True)), 201


@bp.get("/webhooks")
def list_hooks():
    return jsonify({"webhooks": [public(h) for h in services().store.list_webhooks(owner())]})


@bp.delete("/webhooks/<webhook_id>")
def delete(webhook_id: str):
    services().webhooks.unsubscribe(webhook_id, owner())
    return Response(status=204)


@bp.post("/webhook/unregister")
def unregister():
    webhook_id = load(WebhookIdInput)["id"]
    services().webhooks.unsubscribe(webhook_id, owner())
    return jsonify({"id": webhook_id, "deleted": True})


@bp.get("/webhooks/<webhook_id>/deliveries")
def deliveries(webhook_id: str):
    svc = services()
    svc.webhooks.get(webhook_id, owner())
    rows = svc.store.deliveries(webhook_id)
    return jsonify({"webhook_id": webhook_id, "deliveries": [{k: r[k] for k in DELIVERY_FIELDS} for r in rows]})
