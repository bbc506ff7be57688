"""The kernel session as a binding of `glusterpy mount`: `serve(bridge, config, ready)`.

Its own `-o` options (GlusterFS's names where GlusterFS has one):
  background-qlen=N       requests the kernel keeps in flight in the background (default 64)
  congestion-threshold=N  background requests above which the kernel holds back (default 48)
  max-write=BYTES         the largest WRITE request (default: as large as the fuse module allows)
  read-ahead-kb=N         read-ahead of the mount's device, root only (default: max-write)
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable

import trio

from glusterpy.fuse.bridge import Bridge, MountConfig, MountError
from glusterpy.fuse.kernel import serve_mount
from glusterpy.fuse.kernel.session import SessionOptions

log = logging.getLogger(__name__)

EXTRA_OPTIONS = frozenset({"background-qlen", "congestion-threshold", "max-write", "read-ahead-kb"})
# The kernel keeps max_background and congestion_threshold in 16 bits.
LIMITS = {
    "background-qlen": (1, 65535),
    "congestion-threshold": (1, 65535),
    "max-write": (4096, 1 << 30),
    "read-ahead-kb": (0, 1 << 20),
}


def _number(config: MountConfig, key: str) -> int | None:
    text = config.extra.get(key)
    if text is None:
        return None
    low, high = LIMITS[key]
    try:
        value = int(text)
    except ValueError:
        raise MountError(f"mount option {key}={text}: not a whole number") from None
    if not low <= value <= high:
        raise MountError(f"mount option {key}={text}: must be between {low} and {high}")
    return value


def session_options(config: MountConfig) -> tuple[SessionOptions, int]:
    """The session's options and the read-ahead (KiB) from the mount's `-o` keys."""
    options = SessionOptions(max_write=_number(config, "max-write"))
    background = _number(config, "background-qlen")
    congestion = _number(config, "congestion-threshold")
    if background is not None:
        options.max_background = background
    if congestion is not None:
        options.congestion_threshold = congestion
    if options.congestion_threshold > options.max_background:
        raise MountError(
            f"mount option congestion-threshold={options.congestion_threshold} is above "
            f"background-qlen={options.max_background}"
        )
    read_ahead = _number(config, "read-ahead-kb")
    if read_ahead is None:
        read_ahead = options.max_pages() * 4
    return options, read_ahead


async def serve(bridge: Bridge, config: MountConfig, ready: Callable[[], None]) -> None:
    """Mount, answer requests until unmounted or signalled, unmount; see MountConfig."""
    options, read_ahead = session_options(config)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_cancel_on_signal, nursery.cancel_scope)
        try:
            await nursery.start(_serve, bridge, config, options, read_ahead, nursery.cancel_scope)
        except OSError as exc:
            raise MountError(
                f"mounting {config.fsname} on {config.mountpoint} failed: {exc.strerror or exc}"
            ) from None
        ready()


async def _serve(
    bridge: Bridge,
    config: MountConfig,
    options: SessionOptions,
    read_ahead: int,
    scope: trio.CancelScope,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    # `scope` (our nursery's) is cancelled by a signal; when the mount goes away we end it too.
    await serve_mount(
        bridge,
        config.mountpoint,
        config.fsname,
        options,
        read_ahead_kb=read_ahead,
        allow_other=config.allow_other,
        device=config.device,
        task_status=task_status,
    )
    scope.cancel()


async def _cancel_on_signal(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("got %s; unmounting", signal.Signals(signum).name)
            scope.cancel()
            return
