"""Credentials never leave memory: storage URLs as they may be written or shown.

A storage URL can carry a password (`user:pass@host`) or a credential in its query
(`?password=...`, `?sslpassword=...`, `?token=...`). Every place that records or prints a
URL (summaries, search configs written for workers, logs, reports, error messages) goes
through `redact`; processes that need the real URL get it through the environment
(`STORAGE_ENV`), never on their command line, where every user of the machine can read it.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit

STORAGE_ENV = "HWNAS_STORAGE_URL"  # how `hwnas search` workers receive the study's storage URL
HIDDEN = "***"
_CREDENTIAL = re.compile(r"pass|pwd|secret|token|key|auth|credential|cookie|session", re.IGNORECASE)


def redact(url: str) -> str:
    """`url` with its password and every credential-like query value replaced by ***."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return HIDDEN
    shown = url
    if parts.password:
        userinfo = parts.netloc.rsplit("@", 1)[0]
        shown = shown.replace(f"{userinfo}@", f"{userinfo.split(':', 1)[0]}:{HIDDEN}@", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if any(_CREDENTIAL.search(k) for k, _ in pairs):
        query = urlencode([(k, HIDDEN if _CREDENTIAL.search(k) else v) for k, v in pairs], safe="*/:")
        shown = shown[:shown.index("?") + 1] + query + (f"#{parts.fragment}" if parts.fragment else "")
    return shown


def scrub(text: str, url: str) -> str:
    """`text` (an error message from a database driver) with `url` and its secrets redacted."""
    text = text.replace(url, redact(url))
    try:
        parts = urlsplit(url)
    except ValueError:
        return text
    secrets = [parts.password] if parts.password else []
    secrets += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if _CREDENTIAL.search(k) and v]
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return text
