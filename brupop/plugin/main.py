"""Running a plugin command: connect as kubectl would, check that brupop is installed, then show the status
(once, or redrawn on every watch event) or make the write. Exit codes: 0 done, 1 the cluster refused or
lacks something (the line says what), 2 a bad command line or kubeconfig, 130 interrupted."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Final, TextIO

from brupop.kube.client import NODES, SHADOWS, KubeClient
from brupop.kube.config import KubeConfigError
from brupop.kube.informer import Informer
from brupop.logs import configure
from brupop.plugin.args import DEFAULT_NAMESPACE, parser
from brupop.plugin.cluster import POLICIES, Cluster, PluginError, trim_node
from brupop.plugin.commands import Commands
from brupop.plugin.facts import Snapshot, node_facts, shadow_facts
from brupop.plugin.kubeconfig import Connection, ExecCredential, connect
from brupop.plugin.output import as_json, as_text, as_yaml, document
from brupop.plugin.report import Report, report

TICK: Final = 10.0
"""How often a terminal view redraws without events (its relative times move on)."""
CLEAR: Final = "\x1b[H\x1b[2J"
RENDER: Final[dict[str, Callable[[Report], str]]] = {"text": as_text, "json": as_json, "yaml": as_yaml}


def main(argv: Sequence[str] | None = None) -> int:
    """`kubectl-brupop`."""
    return run(parser().parse_args(argv), prog="kubectl brupop")


def run(args: argparse.Namespace, *, prog: str) -> int:
    configure({"TRACING_FILTER_DIRECTIVE": "error", "LOGGING_FORMATTER": "compact"})
    try:
        connection = connect(
            kubeconfig=getattr(args, "kubeconfig", None),
            context=getattr(args, "context", None),
            env=os.environ,
        )
    except KubeConfigError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args, connection))
    except PluginError as err:
        print(f"{prog} {args.program}: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


async def _run(args: argparse.Namespace, connection: Connection) -> int:
    namespace = getattr(args, "namespace", None) or DEFAULT_NAMESPACE
    async with KubeClient(connection.config) as kube:
        cluster = Cluster(kube, namespace=namespace, where=connection.where)
        await cluster.whoami()  # so that a refusal can say who was refused
        served = await cluster.installed()
        if args.program == "status":
            if args.watch:
                await watch(cluster, served=served, output=args.output, credential=connection.credential)
            else:
                snapshot = await cluster.snapshot(policies_served=served)
                sys.stdout.write(RENDER[args.output](report(snapshot, now=datetime.now(UTC))))
            return 0
        commands = Commands(cluster, policies_served=served, now=datetime.now(UTC))
        match args.program:
            case "pause":
                said = await commands.pause(args.policy)
            case "resume":
                said = await commands.resume(args.policy)
            case "hold":
                said = await commands.hold(args.node, args.reason)
            case "release":
                said = await commands.release(args.node)
            case _:
                said = await commands.retry(args.node)
        print(said)
        return 0


def frame(shown: Report, *, output: str, terminal: bool) -> str:
    """One redraw: the whole screen on a terminal; in a pipe a separated frame (text), one JSON document
    per line, or one YAML document."""
    if output == "json":
        return json.dumps(document(shown)) + "\n"
    if output == "yaml":
        return "---\n" + as_yaml(shown)
    title = f"brupop status, namespace {shown.namespace}, {shown.at.strftime('%Y-%m-%d %H:%M:%S')} UTC"
    if terminal:
        return f"{CLEAR}{title} (Ctrl-C ends)\n\n{as_text(shown)}"
    return f"--- {title}\n{as_text(shown)}\n"


async def watch(
    cluster: Cluster,
    *,
    served: bool,
    output: str,
    credential: ExecCredential | None,
    out: TextIO = sys.stdout,
) -> None:
    """Draw, then redraw on every change the watches bring (and, on a terminal, every TICK seconds)."""
    first = await cluster.snapshot(policies_served=served)  # refusals surface here, with their words
    terminal = out.isatty() and output == "text"
    changed = asyncio.Event()
    kube, ns = cluster.kube, cluster.namespace
    shadows = Informer(kube.list_watch(SHADOWS, namespace=ns), name="shadows", on_change=changed.set)
    nodes = Informer(
        kube.list_watch(NODES, transform=trim_node), name="nodes", transform=trim_node, on_change=changed.set
    )
    policies = Informer(kube.list_watch(POLICIES), name="policies", on_change=changed.set) if served else None
    informers = [i for i in (shadows, nodes, policies) if i is not None]
    tasks = [asyncio.create_task(i.run()) for i in informers]
    if credential is not None:
        tasks.append(asyncio.create_task(_refresh(credential)))
    try:
        out.write(frame(report(first, now=datetime.now(UTC)), output=output, terminal=terminal))
        out.flush()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await changed.wait()
            event = changed.is_set()
            changed.clear()
            if not all(i.ready.is_set() for i in informers) or not (event or terminal):
                continue
            facts = tuple(map(shadow_facts, shadows.items()))
            named = {s.node for s in facts}
            now_nodes = {n.name: n for n in map(node_facts, nodes.items()) if n.opted_in or n.name in named}
            snapshot = Snapshot(
                namespace=ns,
                nodes=now_nodes,
                shadows=facts,
                policies=tuple(policies.items()) if policies is not None else (),
                controller=first.controller,
                policies_served=served,
            )
            out.write(frame(report(snapshot, now=datetime.now(UTC)), output=output, terminal=terminal))
            out.flush()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _refresh(credential: ExecCredential) -> None:
    """Keep an exec plugin's token fresh for as long as the watch runs."""
    while credential.refresh_at is not None:
        await asyncio.sleep(max((credential.refresh_at - datetime.now(UTC)).total_seconds(), 1.0))
        await asyncio.to_thread(credential.refresh)
