"""`python -m integ.hostsim --socket PATH --version X --offer Y ...`: run one simulated host (or, with
`--fleet N --dir DIR`, N hosts at DIR/host-<i>/api.sock) in the foreground until interrupted. Each host's
boot-ID file is beside its socket; the fleet's control socket (faults while running, see
`integ.hostsim.control`) is in the socket's directory (or DIR). Must run as root (see `server`)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from pathlib import Path

from brupop.models.host import CommandType
from integ.hostsim.fleet import Fleet
from integ.hostsim.host import Timings
from integ.hostsim.server import SimulatorError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integ.hostsim", description=__doc__)
    parser.add_argument("--socket", type=Path, help="socket path of a single host")
    parser.add_argument("--fleet", type=int, default=0, help="run this many hosts instead")
    parser.add_argument("--dir", type=Path, help="directory of the fleet's sockets")
    parser.add_argument("--version", required=True, help="the version the host(s) run")
    parser.add_argument("--offer", action="append", default=[], help="a version on offer (repeatable)")
    parser.add_argument("--variant", default="aws-k8s-1.29")
    parser.add_argument("--arch", default="x86_64")
    parser.add_argument("--time-scale", type=float, default=1.0, help="multiply every host duration by this")
    parser.add_argument(
        "--fail",
        action="append",
        default=[],
        choices=[c.value for c in CommandType],
        help="make this command fail (repeatable)",
    )
    parser.add_argument("--rollback", action="store_true", help="reboots come back on the old version")
    parser.add_argument(
        "--shutdown",
        type=float,
        default=Timings.shutdown,
        help="host seconds the API keeps answering after accepting a reboot",
    )
    args = parser.parse_args(argv)
    if (args.socket is None) == (args.fleet == 0):
        parser.error("give either --socket PATH or --fleet N --dir DIR")
    if args.fleet and args.dir is None:
        parser.error("--fleet needs --dir")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_run(args))
    except SimulatorError as err:
        print(f"python -m integ.hostsim: {err}", file=sys.stderr)
        return 2
    return 0


async def _run(args: argparse.Namespace) -> None:
    single = args.socket is not None
    names = ["host"] if single else [f"host-{i}" for i in range(args.fleet)]
    fleet = Fleet(
        args.socket.parent if single else args.dir,
        time_scale=args.time_scale,
        timings=Timings(shutdown=args.shutdown),
    )
    for version in args.offer:
        fleet.repository.offer(version, variant=args.variant, arch=args.arch)
    for name in names:
        host = await fleet.add(
            name,
            version=args.version,
            variant=args.variant,
            arch=args.arch,
            socket=args.socket if single else None,
        )
        for command in args.fail:
            host.faults.failing[CommandType(command)] = (1, f"simulated {command} failure")
        host.faults.rolls_back = args.rollback
        print(f"{name}: {args.socket if single else fleet.socket(name)}", flush=True)
    print(f"control: {fleet.control_socket}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fleet.stop()


if __name__ == "__main__":
    raise SystemExit(main())
