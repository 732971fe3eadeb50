"""``/v1/models``: merging every provider's model list into one OpenAI list.

Providers answer in their own shapes (OpenAI ``data``, Anthropic ``data`` with
``display_name``, Google/Cohere ``models`` with ``name``, Cloudflare
``result``); each entry becomes ``{"id": "provider/model", "served_by": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from igw_core.routing import ModelPolicy


def _entries(parsed: Any) -> list[Any]:
    if isinstance(parsed, list):
        return parsed
    if isinstance(parsed, dict):
        for key in ("data", "models", "result"):
            value = parsed.get(key)
            if isinstance(value, list):
                return value
    return []


def parse_model_list(provider_id: str, body: bytes) -> list[dict[str, Any]]:
    """Return OpenAI model objects for a provider's model-list response.

    Raises:
        ValueError: the body is not JSON.
    """
    try:
        parsed = json.loads(body)
    except RecursionError:
        raise ValueError("model list nested too deeply") from None
    out: list[dict[str, Any]] = []
    for entry in _entries(parsed):
        if isinstance(entry, str):
            name, entry = entry, {}
        elif isinstance(entry, dict):
            raw = entry.get("id") or entry.get("name") or entry.get("model")
            if not isinstance(raw, str) or not raw:
                continue
            name = raw.removeprefix("models/")
        else:
            continue
        created = entry.get("created")
        model: dict[str, Any] = {
            "id": f"{provider_id}/{name}",
            "object": "model",
            "created": created if isinstance(created, int) else 0,
            "owned_by": entry.get("owned_by") if isinstance(entry.get("owned_by"), str)
            else provider_id,
            "served_by": provider_id,
        }
        if isinstance(entry.get("display_name"), str):
            model["display_name"] = entry["display_name"]
        out.append(model)
    return out


def filter_models(models: list[dict[str, Any]], policy: ModelPolicy) -> list[dict[str, Any]]:
    """Return the models the policy permits."""
    kept = []
    for model in models:
        provider, _, name = model["id"].partition("/")
        if policy.permits(provider, name):
            kept.append(model)
    return kept


def alias_models(aliases: Iterable[str], policy: ModelPolicy) -> list[dict[str, Any]]:
    """Return the list entries of the routing aliases the policy permits
    (``owned_by`` and ``served_by`` are ``igw``: the gateway picks the provider)."""
    return [{"id": alias, "object": "model", "created": 0, "owned_by": "igw", "served_by": "igw"}
            for alias in aliases if policy.permits("", alias)]
