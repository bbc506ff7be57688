"""Address authentication for protocol/server: `auth.addr.<subvolume>.allow` and `.reject`.

As in GlusterFS, access is denied unless an allow pattern matches: a subvolume with no auth
option is served to nobody. Reject patterns are checked first and win. Patterns are fnmatch
wildcards over the client's address as text ("127.0.0.1", "192.168.1.*", "*"). GlusterFS 2.0
also demanded a source port below 1024; glusterpy does not.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)


def _patterns(options: Mapping[str, Any], subvolume: str, verdict: str) -> tuple[str, ...]:
    value = options.get(f"auth.addr.{subvolume}.{verdict}")
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _matches(address: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(address, pattern) for pattern in patterns)


def check_address(options: Mapping[str, Any], subvolume: str, address: str) -> str | None:
    """None when `address` may use `subvolume`, else the reason it may not."""
    if _matches(address, _patterns(options, subvolume, "reject")):
        return f"address {address} is rejected for subvolume {subvolume}"
    allow = _patterns(options, subvolume, "allow")
    if not allow:
        return f"no auth.addr.{subvolume}.allow option: access to {subvolume} is denied"
    if not _matches(address, allow):
        return f"address {address} is not allowed for subvolume {subvolume}"
    return None
