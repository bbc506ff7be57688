"""Which fuse kernel module is loaded, and how large a request it allows.

The glusterpy-patched module (roles/fuse_module) marks itself in sysfs: a module version
`glusterpy-<n>`, a read-only parameter `glusterpy_patched` = 1, and `max_pages_cap`, its raised
bound on max_pages (1024 pages, 4 MiB). Newer stock kernels instead have the sysctl
fs.fuse.max_pages_limit. Without either, the bound is the stock 256 pages (1 MiB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SYS_MODULE = Path("/sys/module/fuse")
MAX_PAGES_LIMIT_FILE = Path("/proc/sys/fs/fuse/max_pages_limit")
# The kernel's fixed max_pages bound before max_pages_limit existed (1 MiB requests).
STOCK_MAX_PAGES = 256
PAGE_KIB = 4


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _number(path: Path) -> int | None:
    text = _read(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True)
class FuseModule:
    """What the loaded fuse module says of itself."""

    patched: bool
    version: str | None
    max_pages: int

    def describe(self) -> str:
        kind = f"glusterpy-patched ({self.version})" if self.patched else "stock"
        return f"fuse module: {kind}, allows requests up to {self.max_pages * PAGE_KIB} KiB"


def loaded(sys_module: Path = SYS_MODULE, limit_file: Path = MAX_PAGES_LIMIT_FILE) -> FuseModule:
    """The fuse module of the running kernel (built in or loaded), read from sysfs and procfs."""
    patched = _number(sys_module / "parameters" / "glusterpy_patched") == 1
    version = _read(sys_module / "version")
    max_pages = _number(limit_file)
    if max_pages is None and patched:
        max_pages = _number(sys_module / "parameters" / "max_pages_cap")
    return FuseModule(patched, version, max(1, max_pages or STOCK_MAX_PAGES))
