"""`glusterpy heal info|full|split-brain`: see and heal what replicate volumes have pending.

Each command builds the client graph of a client volfile (as a mount does), waits a bounded
time for the bricks to answer, and works through the replicate translators' own heal code:
nothing reads brick directories. `info` lists, per brick, the objects its index holds with
pending changes and the split-brains, and says "Nothing pending heal." when all is clean;
`full` heals the whole volume now, printing progress; `split-brain POLICY [PATH]` resolves
split-brains (all of them, or the one at PATH) with bigger-file, latest-mtime or
source-brick BRICK. Exit status: 0 when done (for `full` and `split-brain`: nothing left
unresolved), 1 when something is left, 2 for a user error.
"""

from __future__ import annotations

import argparse
import errno
import logging
import stat
import uuid
from collections.abc import Awaitable, Callable

import trio

from glusterpy.cli.common import UserError, add_logging_arguments, setup_logging
from glusterpy.graph import Graph
from glusterpy.volfile.parse import parse_file
from glusterpy.xlator import ROOT_GFID
from glusterpy.xlators.cluster._afr_heal import Choice, policy_source
from glusterpy.xlators.cluster._afr_heal_entry import list_dir, resolve_name
from glusterpy.xlators.cluster.replicate import Replicate

log = logging.getLogger(__name__)

_PATH_SEARCH_LIMIT = 200_000
Work = Callable[[list[Replicate], argparse.Namespace], Awaitable[int]]


def register(subparsers: argparse._SubParsersAction) -> None:
    heal = subparsers.add_parser("heal", help="show and heal pending changes of replicate volumes")
    actions = heal.add_subparsers(dest="action", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-f", "--volfile", required=True, metavar="FILE", help="client volfile")
    common.add_argument("--volume-name", metavar="NAME", help="the top volume (default: last)")
    common.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        metavar="S",
        help="seconds to wait for the bricks to answer (default 10)",
    )
    add_logging_arguments(common, "WARNING")

    info = actions.add_parser("info", parents=[common], help="list entries pending heal")
    info.set_defaults(func=lambda args: run(args, heal_info))
    full = actions.add_parser("full", parents=[common], help="heal the whole volume now")
    full.set_defaults(func=lambda args: run(args, heal_full))

    split = actions.add_parser("split-brain", help="resolve split-brains with a policy")
    policies = split.add_subparsers(dest="policy", metavar="POLICY", required=True)
    for policy, what in (
        ("bigger-file", "the bigger copy wins"),
        ("latest-mtime", "the copy modified last wins"),
    ):
        parser = policies.add_parser(policy, parents=[common], help=what)
        parser.add_argument("path", nargs="?", metavar="PATH", help="path in the volume")
    parser = policies.add_parser("source-brick", parents=[common], help="this brick's copy wins")
    parser.add_argument("brick", metavar="BRICK", help="client volume name, or HOST:PATH")
    parser.add_argument("path", nargs="?", metavar="PATH", help="path in the volume")
    split.set_defaults(func=lambda args: run(args, heal_split_brain))


def run(args: argparse.Namespace, work: Work) -> int:
    setup_logging(args)
    graph = Graph.build(parse_file(args.volfile), args.volume_name)
    replicas = [t for t in graph.translators.values() if isinstance(t, Replicate)]
    if not replicas:
        raise UserError(f"{args.volfile}: no cluster/replicate volume to heal")
    for afr in replicas:
        # This process does the healing it is asked for, nothing in the background.
        afr.background_heal = False
    outcome: list[int | str] = []
    trio.run(_session, graph, replicas, args, work, outcome)
    if isinstance(outcome[0], str):
        raise UserError(outcome[0])
    return outcome[0]


async def _session(graph: Graph, replicas, args, work: Work, outcome: list) -> None:
    async with graph.running():
        try:
            await _wait_for_bricks(replicas, args.timeout)
            outcome.append(await work(replicas, args))
        except OSError as exc:
            outcome.append(f"{args.volfile}: {exc.strerror or exc}")
        except UserError as exc:
            outcome.append(str(exc))


async def _wait_for_bricks(replicas: list[Replicate], timeout: float) -> None:
    """Wait until every brick has answered up or down, at most `timeout` seconds."""
    with trio.move_on_after(timeout):
        while any(None in afr.known_states() for afr in replicas):
            await trio.sleep(0.05)
    for afr in replicas:
        if not afr.up_children():
            raise UserError(f"volume {afr.name}: no brick is reachable")


def brick_label(afr: Replicate, i: int) -> str:
    child = afr.children[i]
    host, path = child.options.get("remote-host"), child.options.get("remote-subvolume")
    return f"{child.name} ({host}:{path})" if host and path else child.name


def say(line: str) -> None:
    print(line, flush=True)


def _gfid_text(gfid: bytes) -> str:
    return f"<gfid:{uuid.UUID(bytes=gfid)}>"


async def find_paths(afr: Replicate, gfids: set[bytes]) -> dict[bytes, str]:
    """Paths of the wanted gfids, from a walk of the tree on one good child (bounded)."""
    paths: dict[bytes, str] = {ROOT_GFID: "/"} if ROOT_GFID in gfids else {}
    child = afr.children[afr.up_children()[0]]
    queue, seen = [(ROOT_GFID, "")], 0
    while queue and len(paths) < len(gfids) and seen < _PATH_SEARCH_LIMIT:
        gfid, prefix = queue.pop()
        try:
            entries = await list_dir(child, gfid)
        except OSError:
            continue
        for name, entry in entries.items():
            seen += 1
            path = f"{prefix}/{name.decode(errors='replace')}"
            if entry.iatt.gfid in gfids:
                paths[entry.iatt.gfid] = path
            if stat.S_ISDIR(entry.iatt.mode):
                queue.append((entry.iatt.gfid, path))
    return paths


async def survey(afr: Replicate) -> tuple[dict, dict[bytes, str], dict[bytes, str]]:
    """Each brick's index listing, each listed gfid's status, and the paths found."""
    listing = await afr.shd.pending()
    statuses: dict[bytes, str] = {}
    for gfids in listing.values():
        if not isinstance(gfids, OSError):
            for gfid in gfids:
                if gfid not in statuses:
                    statuses[gfid] = await afr.shd.status(gfid)
    wanted = {g for g, s in statuses.items() if s in ("pending", "split-brain")}
    paths = await find_paths(afr, wanted) if wanted else {}
    return listing, statuses, paths


async def heal_info(replicas: list[Replicate], args: argparse.Namespace) -> int:
    for afr in replicas:
        listing, statuses, paths = await survey(afr)
        say(f"Volume {afr.name} (replica {len(afr.children)})")
        for i, gfids in listing.items():
            say(f"Brick {brick_label(afr, i)}")
            if isinstance(gfids, OSError):
                say(f"  Status: {'not connected' if gfids.errno == errno.ENOTCONN else gfids}")
                continue
            shown = [g for g in gfids if statuses.get(g) in ("pending", "split-brain")]
            for gfid in shown:
                mark = " - split-brain" if statuses[gfid] == "split-brain" else ""
                say(f"  {paths.get(gfid, _gfid_text(gfid))}{mark}")
            say(f"  Number of entries: {len(shown)}")
        split = [g for g, s in statuses.items() if s == "split-brain"]
        say(f"Split-brain entries: {len(split)}")
        for gfid in split:
            say(f"  {paths.get(gfid, _gfid_text(gfid))}")
        _say_summary(afr, listing, statuses)
    return 0


def _say_summary(afr: Replicate, listing: dict, statuses: dict[bytes, str]) -> None:
    pending = sum(1 for s in statuses.values() if s in ("pending", "split-brain"))
    down = [brick_label(afr, i) for i, g in listing.items() if isinstance(g, OSError)]
    if pending == 0 and not down:
        say("Nothing pending heal.")
    elif down:
        say(f"{pending} entries pending heal; not connected: {', '.join(down)}")
    else:
        say(f"{pending} entries pending heal")


async def heal_full(replicas: list[Replicate], args: argparse.Namespace) -> int:
    left = 0
    for afr in replicas:
        say(f"Healing volume {afr.name}: walking the whole tree")
        visited = await afr.shd.heal_tree(progress=say)
        say(f"Walked {visited} objects; healing what the bricks' indexes still list")
        await afr.shd.heal_index(progress=say)
        listing, statuses, _ = await survey(afr)
        _say_summary(afr, listing, statuses)
        left += sum(1 for s in statuses.values() if s in ("pending", "split-brain"))
        left += sum(1 for g in listing.values() if isinstance(g, OSError))
    return 1 if left else 0


async def heal_split_brain(replicas: list[Replicate], args: argparse.Namespace) -> int:
    unresolved = 0
    for afr in replicas:
        brick = _brick_index(afr, args.brick) if args.policy == "source-brick" else None
        choice = Choice(policy=args.policy, brick=brick)
        if args.path:
            unresolved += await _resolve_path(afr, args.path, choice)
            continue
        _, statuses, paths = await survey(afr)
        for gfid in [g for g, s in statuses.items() if s == "split-brain"]:
            results = await afr.shd.heal_object(gfid, choice, say)
            left = "split-brain" in results.values() or "error" in results
            unresolved += left
            say(f"{paths.get(gfid, _gfid_text(gfid))}: {'NOT resolved' if left else 'resolved'}")
        if not statuses or "split-brain" not in statuses.values():
            say(f"Volume {afr.name}: no split-brain found")
    return 1 if unresolved else 0


def _brick_index(afr: Replicate, wanted: str) -> int:
    for i, child in enumerate(afr.children):
        host, path = child.options.get("remote-host"), child.options.get("remote-subvolume")
        if wanted in (child.name, f"{host}:{path}"):
            return i
    names = ", ".join(brick_label(afr, i) for i in range(len(afr.children)))
    raise UserError(f"volume {afr.name} has no brick '{wanted}'; its bricks: {names}")


async def _resolve_path(afr: Replicate, path: str, choice: Choice) -> int:
    parts = [p.encode() for p in path.strip("/").split("/") if p]
    if not parts or any(p in (b".", b"..") for p in parts):
        raise UserError(f"'{path}' is not a path inside the volume")
    parent = ROOT_GFID
    for part in parts[:-1]:
        parent = (await afr.lookup(parent, part))[0].gfid
    name = parts[-1]
    found = {}
    for i in afr.up_children():
        try:
            found[i] = (await afr.children[i].lookup(parent, name, None))[0]
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                raise
    if not found:
        raise UserError(f"'{path}' does not exist on any reachable brick")
    if len({iatt.gfid for iatt in found.values()}) > 1:
        return await _resolve_gfid_mismatch(afr, parent, name, path, choice, found)
    results = await afr.shd.heal_object(next(iter(found.values())).gfid, choice, say)
    left = "split-brain" in results.values() or "error" in results
    say(f"{path}: {'NOT resolved' if left else 'resolved'} ({_summary(results)})")
    return int(left)


async def _resolve_gfid_mismatch(afr, parent, name, path, choice, found) -> int:
    source = policy_source(afr, choice, found)
    if source is None:
        say(f"{path}: NOT resolved: the policy cannot choose between the copies")
        return 1
    for gfid, forced, _ in await resolve_name(afr, parent, name, source):
        await afr.shd.heal_object(gfid, Choice(forced=forced if forced is not None else source))
    say(f"{path}: resolved (the copy on {afr.children[source].name} kept)")
    return 0


def _summary(results: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in results.items()) or "nothing to do"
