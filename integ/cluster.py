"""A real local control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok as
processes on 127.0.0.1, with a fresh PKI and an admin kubeconfig.

Each process runs in its own process group with its output in `<dir>/logs/<name>.log`. The PIDs are
recorded in `.integ/cluster.json` (repo-local, git-ignored), so `down` and the next `up` can kill what a
crashed run left behind. `up` returns only when the cluster is really usable: /readyz answers, the
controller manager has created the `default` service account, and a probe DaemonSet's pod runs on a
probe node (`caught_up`, also what the suite waits for after a test restarted a component).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from integ.pki import CertificateAuthority, service_account_keys
from integ.stages import stages_yaml

REPO = Path(__file__).resolve().parent.parent
STATE_FILE = REPO / ".integ" / "cluster.json"
KWOK_NODE_LABEL = ("kwok.x-k8s.io/node", "fake")
SERVICE_CIDR = "10.0.0.0/24"
POD_CIDR = "10.244.0.0/16"


class ClusterError(RuntimeError):
    pass


def _ephemeral_low() -> int:
    """The first port of the range the kernel hands to outgoing connections (Linux: 32768)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server this harness starts. Taken below the ephemeral range: a
    port the kernel chose (bind to port 0) is one any outgoing connection may get before the server binds
    it (an agent's health port was once taken so, and the agent exited with EADDRINUSE)."""
    low = min(_ephemeral_low(), 65536)
    candidates = range(max(low - 12000, 1024), low)
    for _ in range(500):
        port = random.choice(candidates)
        if port in _GIVEN:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # every address: some programs listen on all of them
            except OSError:
                continue
        _GIVEN.add(port)
        return port
    raise ClusterError(f"no free port below {low}")


@dataclass
class ClusterState:
    directory: str
    kubeconfig: str
    server: str
    pids: dict[str, int] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    """How each component was started (argv, then its extra environment), so it can be started again."""
    envs: dict[str, dict[str, str]] = field(default_factory=dict)
    stops: int = 0
    """How many times a component was stopped after `up`: the control plane's own clients back off after one
    (see `caught_up`)."""

    def save(self) -> None:
        STATE_FILE.parent.mkdir(exist_ok=True)
        STATE_FILE.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls) -> ClusterState | None:
        try:
            return cls(**json.loads(STATE_FILE.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def _signal(pid: int, sig: int) -> bool:
    """Send `sig` to the process group; False when it is gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _kill_groups(pids: list[int], *, grace: float = 5.0) -> None:
    """SIGTERM every group, wait for all at once, SIGKILL what is left."""
    alive = [pid for pid in pids if _signal(pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while alive and time.monotonic() < deadline:
        time.sleep(0.05)
        alive = [pid for pid in alive if _signal(pid, 0)]
    for pid in alive:
        _signal(pid, signal.SIGKILL)


def launch(state: ClusterState, name: str) -> None:
    """Start component `name` as recorded in `state` (its log appended to), and record its PID."""
    logs = Path(state.directory) / "logs"
    with (logs / f"{name}.log").open("ab") as log:
        process = subprocess.Popen(
            state.commands[name],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **state.envs.get(name, {})},
        )
    state.pids[name] = process.pid
    state.save()


def stop_component(state: ClusterState, name: str, *, sig: int = signal.SIGKILL) -> None:
    """Stop one component (SIGKILL by default: a crash, not a shutdown) and wait until it is gone."""
    pid = state.pids[name]
    state.stops += 1
    state.save()
    _signal(pid, sig)
    deadline = time.monotonic() + 30
    while _signal(pid, 0) and time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        time.sleep(0.05)
    if _signal(pid, 0):
        _signal(pid, signal.SIGKILL)


def restart_component(
    state: ClusterState, name: str, *, down_for: float = 0.0, sig: int = signal.SIGKILL
) -> None:
    """Kill component `name` (kube-apiserver, etcd, ...), keep it down for `down_for` seconds, start it
    again with the same command line, and return when it serves again (kube-apiserver: /readyz; others:
    once started)."""
    stop_component(state, name, sig=sig)
    if down_for > 0:
        time.sleep(down_for)
    launch(state, name)
    if name in ("kube-apiserver", "etcd"):
        with admin_client(state) as admin:
            _wait(
                f"kube-apiserver /readyz after restarting {name}",
                _serving(admin),
                timeout=90,
                logs=Path(state.directory) / "logs" / f"{name}.log",
            )


def _serving(admin: httpx.Client) -> Callable[[], bool]:
    """Whether kube-apiserver answers its /readyz with 200, asked each time it is called."""
    return lambda: admin.get("/readyz").status_code == 200


def admin_client(state: ClusterState) -> httpx.Client:
    """A synchronous client with the cluster's admin certificate (system:masters)."""
    directory = Path(state.directory)
    context = ssl.create_default_context(cafile=str(directory / "ca.crt"))
    context.load_cert_chain(str(directory / "admin.crt"), str(directory / "admin.key"))
    return httpx.Client(base_url=state.server, verify=context, timeout=5)


def is_ready(node: Mapping[str, Any]) -> bool:
    """Whether a Node's Ready condition is True."""
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (node.get("status") or {}).get("conditions") or ()
    )


PROBE_LABEL = "brupop-integ/probe"


def caught_up(state: ClusterState, *, timeout: float = 120.0) -> None:
    """Return once the control plane acts on a new node as it should: kwok makes a fresh probe node Ready,
    kube-controller-manager makes a probe DaemonSet's pod for it, kube-scheduler binds it, kwok runs it, and
    the garbage collector removes it with its DaemonSet.

    After kube-apiserver (or etcd) went away, the reflectors of the controller manager and of the scheduler
    (client-go) retry their lists and watches with a backoff that doubles up to 30 s: here a DaemonSet pod
    for a node made after a 15 s outage was bound 25 s late. A real cluster does the same, and the test that
    restarts the API server lives with it; the tests after it must not (an agent pod not there within 30 s
    failed one four tests later in CI), so the suite waits for this between them (tests/integ/conftest.py)."""
    started = time.monotonic()
    name = f"caught-up-probe-{os.getpid()}-{state.stops}-{random.randrange(1 << 32):08x}"
    logs = Path(state.directory) / "logs"
    labels = {PROBE_LABEL: name}
    node = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1], **labels},
            "annotations": {KWOK_NODE_LABEL[0]: KWOK_NODE_LABEL[1]},
        },
        "spec": {"taints": [{"key": PROBE_LABEL, "effect": "NoSchedule"}]},  # nobody else's pods land here
    }
    daemonset = {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": labels,
                    "tolerations": [{"operator": "Exists"}],
                    "automountServiceAccountToken": False,
                    "containers": [{"name": "probe", "image": "probe"}],
                },
            },
        },
    }
    daemonsets = "/apis/apps/v1/namespaces/default/daemonsets"
    selector = {"labelSelector": f"{PROBE_LABEL}={name}"}

    def left() -> float:
        return max(timeout - (time.monotonic() - started), 1.0)

    with admin_client(state) as admin:
        # A restart whose thread outlived its scenario (a cancelled to_thread runs on) may still be under way.
        _wait("kube-apiserver /readyz", _serving(admin), timeout=left())
        admin.post("/api/v1/nodes", json=node).raise_for_status()
        admin.post(daemonsets, json=daemonset).raise_for_status()

        def probe_pods() -> list[dict[str, Any]]:
            answer = admin.get("/api/v1/namespaces/default/pods", params=selector).raise_for_status()
            found: list[dict[str, Any]] = answer.json()["items"]
            return found

        def pod_where(test: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
            return lambda: any(test(p) for p in probe_pods())

        def bound(pod: dict[str, Any]) -> bool:
            return bool(pod["spec"].get("nodeName") == name)

        def running(pod: dict[str, Any]) -> bool:
            return bool(pod.get("status", {}).get("phase") == "Running")

        _wait(
            "kwok to make a probe node Ready",
            lambda: is_ready(admin.get(f"/api/v1/nodes/{name}").json()),
            timeout=left(),
            logs=logs / "kwok.log",
        )
        waits = (
            ("the probe DaemonSet's pod", pod_where(lambda _: True), "kube-controller-manager"),
            ("the probe pod bound to its node", pod_where(bound), "kube-scheduler"),
            ("the probe pod Running", pod_where(running), "kwok"),
        )
        for what, check, component in waits:
            _wait(what, check, timeout=left(), logs=logs / f"{component}.log")
        admin.delete(f"{daemonsets}/{name}", params={"propagationPolicy": "Background"}).raise_for_status()
        _wait(
            "the garbage collector to remove the probe pod",
            lambda: not probe_pods(),
            timeout=left(),
            logs=logs / "kube-controller-manager.log",
        )
        admin.delete(f"/api/v1/nodes/{name}").raise_for_status()


def down(*, keep_files: bool = False) -> None:
    """Stop the recorded cluster (if any) by PID and remove its files."""
    state = ClusterState.load()
    if state is None:
        return
    _kill_groups(list(state.pids.values()))
    if not keep_files:
        shutil.rmtree(state.directory, ignore_errors=True)
        shutil.rmtree(Path("/dev/shm") / Path(state.directory).name, ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)


def _wait(what: str, check: Callable[[], bool], *, timeout: float, logs: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError, OSError):
            if check():
                return
        time.sleep(0.1)
    tail = ""
    if logs is not None and logs.is_file():
        tail = "\n" + "\n".join(logs.read_text(errors="replace").splitlines()[-30:])
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}{tail}")


class LocalCluster:
    def __init__(self, *, bins: Path, directory: Path | None = None) -> None:
        self.bins = bins
        self.dir = directory or Path(tempfile.mkdtemp(prefix="brupop-cluster-"))
        self.logs = self.dir / "logs"
        self.kubeconfig = self.dir / "admin.kubeconfig"
        self.state: ClusterState | None = None
        self.ca: CertificateAuthority | None = None

    def _start(self, name: str, args: list[str], env: dict[str, str] | None = None) -> None:
        assert self.state is not None
        self.state.commands[name] = [str(self.bins / name), *args]
        self.state.envs[name] = dict(env or {})
        launch(self.state, name)

    def up(self, *, timeout: float = 90.0) -> ClusterState:
        down()  # leftovers of a crashed run
        try:
            return self._up(timeout=timeout)
        except BaseException:
            down(keep_files=True)
            raise

    def _up(self, *, timeout: float) -> ClusterState:
        started = time.monotonic()
        # brupop's programs run as the image's user (uid 65532): they may pass through, not list or read.
        self.dir.chmod(0o711)
        self.logs.mkdir(parents=True, exist_ok=True)
        ca = self.ca = CertificateAuthority.create(self.dir)
        ca.issue(
            self.dir,
            "apiserver",
            common_name="kube-apiserver",
            dns=(
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ),
            ips=("127.0.0.1", "10.0.0.1"),
            server=True,
        )
        ca.issue(
            self.dir, "admin", common_name="kubernetes-admin", organizations=("system:masters",), client=True
        )
        sa_key, sa_pub = service_account_keys(self.dir)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        server = f"https://127.0.0.1:{api_port}"
        self.state = ClusterState(directory=str(self.dir), kubeconfig=str(self.kubeconfig), server=server)
        self._write_kubeconfig(server)
        shm = Path("/dev/shm")
        data = (shm if shm.is_dir() else self.dir) / self.dir.name / "etcd"
        self._start(
            "etcd",
            [
                "--name=default",
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
        )
        self._start(
            "kube-apiserver",
            [
                f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                "--bind-address=127.0.0.1",
                f"--secure-port={api_port}",
                "--advertise-address=127.0.0.1",
                "--endpoint-reconciler-type=none",
                f"--tls-cert-file={self.dir / 'apiserver.crt'}",
                f"--tls-private-key-file={self.dir / 'apiserver.key'}",
                f"--client-ca-file={ca.cert_file}",
                "--authorization-mode=Node,RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={sa_pub}",
                f"--service-account-signing-key-file={sa_key}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--allow-privileged=true",
                f"--cert-dir={self.dir / 'apiserver-certs'}",
                "--v=1",
            ],
        )
        with admin_client(self.state) as admin:
            _wait(
                "kube-apiserver /readyz",
                _serving(admin),
                timeout=timeout,
                logs=self.logs / "kube-apiserver.log",
            )
        common = [f"--kubeconfig={self.kubeconfig}", "--leader-elect=false", "--bind-address=127.0.0.1"]
        self._start(
            "kube-controller-manager",
            [
                *common,
                f"--secure-port={free_port()}",
                "--controllers=*",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca.cert_file}",
                "--node-monitor-grace-period=50s",
            ],
        )
        self._start("kube-scheduler", [*common, f"--secure-port={free_port()}"])
        stages = self.dir / "kwok-stages.yaml"
        stages.write_text(stages_yaml())
        kwok_home = self.dir / "kwok-home"
        kwok_home.mkdir(exist_ok=True)
        self._start(
            "kwok",
            [
                f"--kubeconfig={self.kubeconfig}",
                f"--config={stages}",
                f"--manage-nodes-with-label-selector={KWOK_NODE_LABEL[0]}={KWOK_NODE_LABEL[1]}",
                "--node-lease-duration-seconds=40",
                f"--cidr={POD_CIDR}",
            ],
            env={"HOME": str(kwok_home), "KWOK_WORKDIR": str(kwok_home)},
        )
        remaining = max(timeout - (time.monotonic() - started), 10.0)
        self._wait_usable(timeout=remaining)
        return self.state

    def _wait_usable(self, *, timeout: float) -> None:
        assert self.state is not None
        started = time.monotonic()
        with admin_client(self.state) as admin:
            _wait(
                "the default service account (kube-controller-manager)",
                lambda: admin.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200,
                timeout=timeout,
                logs=self.logs / "kube-controller-manager.log",
            )
        caught_up(self.state, timeout=max(timeout - (time.monotonic() - started), 10.0))

    def _write_kubeconfig(self, server: str) -> None:
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "brupop-integ",
            "clusters": [
                {
                    "name": "local",
                    "cluster": {"server": server, "certificate-authority": str(self.dir / "ca.crt")},
                }
            ],
            "users": [
                {
                    "name": "admin",
                    "user": {
                        "client-certificate": str(self.dir / "admin.crt"),
                        "client-key": str(self.dir / "admin.key"),
                    },
                }
            ],
            "contexts": [{"name": "brupop-integ", "context": {"cluster": "local", "user": "admin"}}],
        }
        self.kubeconfig.write_text(json.dumps(config, indent=2))  # JSON is YAML too, and spares programs yaml
