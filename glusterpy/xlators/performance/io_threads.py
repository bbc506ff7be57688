"""performance/io-threads: run the blocking disk work below in a bounded pool of threads.

Every fop passes down unchanged, but inside `blocking_calls_in(self.limiter)`, so each
`run_blocking` call below (storage/posix's disk calls) runs in a worker thread, at most
`thread-count` at a time. One slow disk call then holds one thread instead of the whole brick.
Calls that wait without blocking (lock waits, network) hold no thread.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from glusterpy.volfile.options import Bool, Int, Option, StrList
from glusterpy.xlator import FOPS, Translator, blocking_calls_in

log = logging.getLogger(__name__)


# Fops that only look at or change one inode's attributes and xattrs (and the lock fops, which
# never reach the disk): cheaper to run inline than to hand to a thread.
INLINE_DEFAULT = (
    "lookup",
    "stat",
    "fstat",
    "getxattr",
    "listxattr",
    "xattrop",
    "inodelk",
    "entrylk",
)


def _in_threads(fop: str) -> Callable[..., Any]:
    """A fop that passes the call to the first child with blocking calls in our threads."""

    async def fop_in_threads(self: IoThreads, *args: Any, **kwargs: Any) -> Any:
        if fop in self.inline:
            return await getattr(self.child, fop)(*args, **kwargs)
        with blocking_calls_in(self.limiter):
            return await getattr(self.child, fop)(*args, **kwargs)

    fop_in_threads.__name__ = fop
    fop_in_threads.__qualname__ = f"IoThreads.{fop}"
    fop_in_threads.__doc__ = f"Pass {fop} down; blocking calls below run in the thread pool."
    return fop_in_threads


class IoThreads(Translator):
    """A pass-through translator owning one trio.CapacityLimiter of `thread-count` tokens.

    Invariant: no more than `thread-count` blocking calls from below run at once; the others
    wait for a token in FIFO order (trio.CapacityLimiter is fair).
    """

    type_name = "performance/io-threads"
    options_table = (
        Option(
            "thread-count",
            Int(min=1, max=256),
            "16",
            help="How many blocking disk calls may run at once, each in its own thread.",
        ),
        Option(
            "inline-fops",
            StrList(),
            ",".join(INLINE_DEFAULT),
            help="Fops whose disk calls run on the brick's event loop instead of a thread: "
            "those that read or change one inode's attributes, which the kernel has cached "
            "almost always. A thread hand-off costs more than such a call; a call that does "
            "wait for the disk holds up the brick meanwhile. 'none' sends every fop to the "
            "threads.",
        ),
        Option(
            "autoscaling",
            Bool(),
            "off",
            help="Accepted for compatibility with GlusterFS 2.0; has no effect "
            "(the pool is fixed at thread-count).",
        ),
        Option(
            "min-threads",
            Int(min=1, max=256),
            "1",
            help="Accepted for compatibility; has no effect (threads start on demand).",
        ),
        Option(
            "max-threads",
            Int(min=1, max=256),
            "256",
            help="Accepted for compatibility; has no effect (thread-count is the limit).",
        ),
    )

    def __init__(self, name: str, children: Sequence[Translator], options: dict[str, Any]):
        super().__init__(name, children, options)
        self.thread_count = options.get("thread-count") or 16
        inline = options.get("inline-fops") or INLINE_DEFAULT
        inline = () if tuple(inline) == ("none",) else tuple(inline)
        unknown = [fop for fop in inline if fop not in FOPS]
        if unknown:
            raise ValueError(
                f"option 'inline-fops': {', '.join(unknown)} is not a fop "
                f"(fops: {', '.join(FOPS)}; or 'none')"
            )
        self.inline = frozenset(inline)
        self.limiter = trio.CapacityLimiter(self.thread_count)

    async def start(self, nursery: trio.Nursery) -> None:
        log.info("io-threads %s: up to %d blocking calls at once", self.name, self.thread_count)


for _fop in FOPS:
    setattr(IoThreads, _fop, _in_threads(_fop))
