"""Turn one TorchServe request dict into image bytes plus per-request setting overrides.

What TorchServe hands the handler for each request (one dict per request in the batch):
    raw body with an image/* or octet-stream Content-Type  -> {"body": bytearray}
    multipart form field ``data``                            -> {"data": bytearray}
    JSON body                                                -> {"body": dict} (already parsed)
    query-string parameters                                  -> extra keys, str or bytes values
JSON bodies carry {"image": "<base64>", <setting>: value, ...}.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from handlers.errors import InputError
from handlers.settings import SETTING_NAMES

__all__ = ["BODY_KEYS", "JSON_IMAGE_KEY", "ParsedRequest", "parse_request"]

BODY_KEYS = ("body", "data")
JSON_IMAGE_KEY = "image"


@dataclass
class ParsedRequest:
    image_bytes: bytes
    overrides: dict[str, Any] = field(default_factory=dict)


def parse_request(item: dict[str, Any]) -> ParsedRequest:
    body = next((item[k] for k in BODY_KEYS if k in item), None)
    overrides = {k: v for k, v in item.items() if k not in BODY_KEYS}
    if body is None:
        raise InputError("request has no body: send image bytes, a multipart field 'data' or JSON")
    if isinstance(body, dict):
        image_bytes, json_overrides = _parse_json(body)
        overrides.update(json_overrides)
    elif isinstance(body, (bytes, bytearray)):
        image_bytes = bytes(body)
        if image_bytes[:1] in (b"{", b"["):
            raise InputError('body looks like JSON but could not be parsed; expected {"image": "<base64>"}')
    elif isinstance(body, str):
        raise InputError(
            "body arrived as text: send image bytes with Content-Type image/jpeg (or "
            "application/octet-stream), or JSON with Content-Type application/json"
        )
    else:
        raise InputError('JSON body must be an object like {"image": "<base64>"}')
    unknown = sorted(set(overrides) - set(SETTING_NAMES))
    if unknown:
        raise InputError(f"unknown parameter(s) {', '.join(unknown)}; accepted: {', '.join(SETTING_NAMES)}")
    return ParsedRequest(image_bytes, overrides)


def _parse_json(body: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    encoded = body.get(JSON_IMAGE_KEY)
    if not isinstance(encoded, str) or not encoded:
        raise InputError('JSON body needs "image": a base64 string of the image bytes')
    if encoded.startswith("data:") and "," in encoded:  # tolerate data URLs from browsers
        encoded = encoded.split(",", 1)[1]
    try:
        image_bytes = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InputError('"image" is not valid base64') from None
    return image_bytes, {k: v for k, v in body.items() if k != JSON_IMAGE_KEY}
