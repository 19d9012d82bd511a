"""Wire formats shared by the backends: timestamps, and a platform's own error message."""

from __future__ import annotations

import calendar
import email.utils
import json
import re
from datetime import UTC, datetime
from typing import Any

import httpx

from remotefs.errors import redact_url

MAX_DETAIL = 200
"""Characters of a server's error message kept in our own error messages."""

_XML_MESSAGE = re.compile(r"<Message>([^<]*)</Message>")


def server_message(response: httpx.Response) -> str:
    """The platform's own error text, if its body has one: SB ``message``, ODM
    ``error.message`` (A25) or the S3 XML ``<Message>``; shortened and redacted."""
    try:
        text = response.text
    except (httpx.ResponseNotRead, UnicodeDecodeError):
        return ""
    message: Any = None
    try:
        body = json.loads(text)
    except ValueError:
        match = _XML_MESSAGE.search(text)
        message = match[1] if match else None
    else:
        if isinstance(body, dict):
            message = body.get("message")
            error = body.get("error")
            if message is None and isinstance(error, dict):
                message = error.get("message")
    if not isinstance(message, str):
        return ""
    return redact_url(message.strip())[:MAX_DETAIL]


def parse_iso8601_ns(value: object) -> int | None:
    """``2019-08-07T13:28:01Z`` (SB 1.3, ODM A19; fractions and offsets allowed) → Unix ns.

    A naive time is taken as UTC. Anything else (missing, malformed): ``None``.
    """
    if not isinstance(value, str) or not value:
        return None
    try:
        stamp = datetime.fromisoformat(value)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        seconds = calendar.timegm(stamp.utctimetuple())
    except (ValueError, OverflowError):  # also year 1 with a positive offset
        return None
    return seconds * 1_000_000_000 + stamp.microsecond * 1_000


def parse_http_date_ns(value: str | None) -> int | None:
    """An HTTP date (``Last-Modified``) → Unix ns, or ``None``."""
    if not value:
        return None
    try:
        stamp = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return calendar.timegm(stamp.utctimetuple()) * 1_000_000_000
