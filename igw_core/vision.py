"""The vision gate: does a chat request carry image input, and may it.

:func:`may_carry_image` is a cheap byte test that is never wrong when it says
"no"; only when it says "maybe" is the parsed body walked by
:func:`carries_image`.
"""

from __future__ import annotations

from typing import Any

from igw_core.errors import BadRequest

# Content-part types that carry an image in the OpenAI and Responses formats.
_IMAGE_PART_TYPES = frozenset({"image_url", "image", "input_image"})

#: Models known to accept text only, by lower-case name prefix.
TEXT_ONLY_MODEL_PREFIXES: tuple[str, ...] = (
    "gpt-3.5",
    "gpt-4-0613",
    "gpt-4-0314",
    "o1-mini",
    "o3-mini",
    "deepseek-chat",
    "deepseek-reasoner",
    "deepseek-coder",
    "llama3-",
    "llama-3.1-",
    "llama-3.3-",
    "mixtral-",
    "mistral-small-2402",
    "codestral",
    "command-r",
)
_TEXT_ONLY_EXACT = frozenset({"gpt-4", "gpt-4-32k", "o1-mini", "o3-mini"})


def may_carry_image(body: bytes) -> bool:
    """Return ``False`` only when ``body`` certainly carries no image part."""
    # Every image part names "image" in its raw JSON, unless the JSON hides the word
    # behind an escape, so any backslash is a "maybe". json.loads also accepts UTF-16
    # and UTF-32 bodies, whose ASCII characters carry NUL bytes (UTF-8 JSON never
    # holds a raw NUL), so a NUL byte is a "maybe" too. The one-byte searches run
    # first: they are memchr scans, many times faster than the word search. find(), not
    # ``in``: CPython's bytes ``in`` first tries the needle as an int and builds a
    # TypeError to learn it is not, which costs more than the scan of a small body.
    return (body.find(b"\x00") != -1 or body.find(b"\\") != -1
            or body.find(b"image") != -1)


def _part_is_image(part: Any) -> bool:
    if not isinstance(part, dict):
        return False
    kind = part.get("type")
    # ``type`` may be any JSON value; a list or object is unhashable.
    if isinstance(kind, str) and kind in _IMAGE_PART_TYPES:
        return True
    return kind is None and ("image_url" in part or "image" in part)


def carries_image(request: Any) -> bool:
    """Return whether a parsed request has image content in any message."""
    if not isinstance(request, dict):
        return False
    # Chat and Anthropic Messages carry "messages"; the Responses API carries "input".
    messages = request.get("messages", request.get("input"))
    if not isinstance(messages, list):
        return False
    for message in messages:
        if not isinstance(message, dict):
            continue
        content = message.get("content")
        if isinstance(content, list) and any(_part_is_image(p) for p in content):
            return True
    return False


def model_lacks_vision(model: str) -> bool:
    """Return whether ``model`` is known to accept text only."""
    name = model.lower().rsplit("/", 1)[-1]
    return name in _TEXT_ONLY_EXACT or name.startswith(TEXT_ONLY_MODEL_PREFIXES)


def check_vision(enabled: bool, body: bytes, request: Any, model: str) -> None:
    """Apply the vision gate to a chat request.

    Raises:
        BadRequest: the request carries images while vision is disabled, or
            the model is known to lack vision.
    """
    if not may_carry_image(body) or not carries_image(request):
        return
    if not enabled:
        raise BadRequest(
            "image input is disabled on this gateway; set ENABLE_VISION=true to allow "
            "image content in chat requests",
            code="vision_disabled",
        )
    if model_lacks_vision(model):
        raise BadRequest(
            f"model '{model}' does not support image input", code="model_lacks_vision"
        )
