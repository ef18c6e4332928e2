"""Build the test world's binaries from the pinned Go modules under `integ/gomod/`, once: the control plane
(kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, etcd, kwok), helm, and prometheus with
promtool.

The binaries land in `~/.cache/brupop-integ/bin/<versions>/`, named by the pinned versions and the Go
version, so a warm cache skips the build entirely and a version bump builds afresh; helm and prometheus
have directories of their own, so bumping one rebuilds it alone. Prometheus is built with the
`remove_all_sd` tag: the test world scrapes static targets only, so the cloud and Kubernetes service
discoveries are left out of the build. Each build goes to a temporary directory that is renamed into place
only when complete, so an interrupted build never leaves a half-filled cache. Go's module and build caches
live beside it, which makes rebuilds fast.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

GOMOD = Path(__file__).resolve().parent / "gomod"
CACHE = Path.home() / ".cache" / "brupop-integ"


@dataclass(frozen=True)
class Target:
    module_dir: str
    package: str
    binary: str
    tags: tuple[str, ...] = ()


CONTROL_PLANE = (
    Target("k8s", "k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
    Target("k8s", "k8s.io/kubernetes/cmd/kube-controller-manager", "kube-controller-manager"),
    Target("k8s", "k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
    Target("k8s", "k8s.io/kubernetes/cmd/kubectl", "kubectl"),
    Target("etcd", "go.etcd.io/etcd/server/v3", "etcd"),
    Target("kwok", "sigs.k8s.io/kwok/cmd/kwok", "kwok"),
)
BINARIES = tuple(t.binary for t in CONTROL_PLANE)
HELM = Target("helm", "helm.sh/helm/v4/cmd/helm", "helm")
PROMETHEUS_MODULE = "github.com/prometheus/prometheus"
PROMETHEUS = (
    Target("prometheus", f"{PROMETHEUS_MODULE}/cmd/prometheus", "prometheus", tags=("remove_all_sd",)),
    Target("prometheus", f"{PROMETHEUS_MODULE}/cmd/promtool", "promtool", tags=("remove_all_sd",)),
)


class BuildError(RuntimeError):
    pass


def pinned_version(module_dir: str, module: str) -> str:
    text = (GOMOD / module_dir / "go.mod").read_text()
    match = re.search(rf"^\s*(?:require\s+)?{re.escape(module)} (v\S+)(?:\s+//.*)?$", text, re.MULTILINE)
    if match is None:
        raise BuildError(f"integ/gomod/{module_dir}/go.mod does not pin {module}")
    return match.group(1)


def go_version() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError(
            "Go is not installed: the test control plane is built from Go modules (need Go >= 1.26)"
        )
    return subprocess.run([go, "env", "GOVERSION"], check=True, capture_output=True, text=True).stdout.strip()


def bin_dir() -> Path:
    k8s = pinned_version("k8s", "k8s.io/kubernetes")
    etcd = pinned_version("etcd", "go.etcd.io/etcd/server/v3")
    kwok = pinned_version("kwok", "sigs.k8s.io/kwok")
    return CACHE / "bin" / f"k8s-{k8s}_etcd-{etcd}_kwok-{kwok}_{go_version()}"


def helm_dir() -> Path:
    return CACHE / "bin" / f"helm-{pinned_version('helm', 'helm.sh/helm/v4')}_{go_version()}"


def prometheus_dir() -> Path:
    return CACHE / "bin" / f"prometheus-{pinned_version('prometheus', PROMETHEUS_MODULE)}_{go_version()}"


def prometheus_release(module_version: str) -> str:
    """The Prometheus release a Go module version is (v0.316.0 is 3.16.0: the module keeps major 0)."""
    match = re.fullmatch(r"v0\.(\d+)(\d\d)\.(\d+)", module_version)
    if match is None:
        raise BuildError(f"{module_version} is not a Prometheus 3 module version such as v0.316.0")
    major, minor, patch = match.groups()
    return f"{major}.{int(minor)}.{patch}"


def go_env() -> Mapping[str, str]:
    return {
        **os.environ,
        "GOTOOLCHAIN": "local",
        "CGO_ENABLED": "0",
        "GOFLAGS": "-trimpath -mod=readonly",
        "GOMODCACHE": str(CACHE / "gomod"),
        "GOCACHE": str(CACHE / "gobuild"),
    }


def _ldflags(target: Target) -> str:
    flags = ["-s", "-w"]
    if target.module_dir == "k8s":
        version = pinned_version("k8s", "k8s.io/kubernetes")
        major, minor = version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
                f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
            ]
    if target.module_dir == "helm":
        pkg = "helm.sh/helm/v4/internal/version"
        flags += [
            f"-X {pkg}.version={pinned_version('helm', 'helm.sh/helm/v4')}",
            f"-X {pkg}.gitTreeState=clean",
        ]
    if target.module_dir == "prometheus":
        pkg = "github.com/prometheus/common/version"
        release = prometheus_release(pinned_version("prometheus", PROMETHEUS_MODULE))
        flags += [f"-X {pkg}.Version={release}", f"-X {pkg}.Branch=HEAD", f"-X {pkg}.BuildUser=brupop-integ"]
    return " ".join(flags)


def build(*, log: TextIO = sys.stderr) -> Path:
    """The directory holding every control-plane binary, building what is missing (and helm, prometheus
    and promtool, which `helm_binary` and `prometheus_binaries` find in directories of their own)."""
    directory = _cached(bin_dir(), CONTROL_PLANE, what="control plane", log=log)
    helm_binary(log=log)
    prometheus_binaries(log=log)
    return directory


def helm_binary(*, log: TextIO = sys.stderr) -> Path:
    return _cached(helm_dir(), (HELM,), what="helm", log=log) / HELM.binary


def prometheus_binaries(*, log: TextIO = sys.stderr) -> Path:
    """The directory holding `prometheus` and `promtool`."""
    return _cached(prometheus_dir(), PROMETHEUS, what="prometheus", log=log)


def _cached(target_dir: Path, targets: tuple[Target, ...], *, what: str, log: TextIO) -> Path:
    if all((target_dir / t.binary).is_file() for t in targets):
        print(f"{what} binaries: cached in {target_dir}", file=log)
        return target_dir
    staging = target_dir.with_name(target_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    for target in targets:
        step = time.monotonic()
        print(f"building {target.binary} from {target.package} ...", file=log, flush=True)
        command = [
            "go",
            "build",
            *(["-tags", ",".join(target.tags)] if target.tags else []),
            "-ldflags",
            _ldflags(target),
            "-o",
            str(staging / target.binary),
            target.package,
        ]
        result = subprocess.run(
            command, cwd=GOMOD / target.module_dir, env=go_env(), capture_output=True, text=True
        )
        if result.returncode != 0:
            where = f"integ/gomod/{target.module_dir}"
            raise BuildError(f"`{' '.join(command)}` in {where} failed:\n{result.stderr.strip()[-4000:]}")
        print(f"  {target.binary}: {time.monotonic() - step:.0f}s", file=log, flush=True)
    shutil.rmtree(target_dir, ignore_errors=True)
    staging.rename(target_dir)
    print(f"{what} built in {time.monotonic() - started:.0f}s: {target_dir}", file=log)
    return target_dir
