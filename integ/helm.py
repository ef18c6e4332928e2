"""Real Helm in the test world: `helm lint|template|install|upgrade|uninstall` of brupop's charts (`charts/`)
with the binary built from its pinned Go module (`integ.build.helm_binary`), and the objects the harness
installs, rendered from the charts with their defaults, so tests and the local harness run what users
install.

The one-file manifest `manifests/bottlerocket-update-operator.yaml` is the charts' defaults too: the
namespace (as `helm install --create-namespace` would make it), then `helm template` of the CRD chart and of
the operator chart, in release namespace brupop-bottlerocket-aws. `python -m integ.helm manifest` rewrites
it; `python -m integ.helm manifest --check` exits 1 when the checked-in file differs.

Helm keeps its configuration, cache and data (repositories, plugins) in a directory of its own under the
build cache, never in the user's home configuration.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from brupop.models.constants import NAMESPACE
from integ.build import CACHE, helm_binary

Obj = dict[str, Any]
REPO = Path(__file__).resolve().parent.parent
CRD_CHART = REPO / "charts" / "bottlerocket-shadow"
OPERATOR_CHART = REPO / "charts" / "bottlerocket-update-operator"
MANIFEST = REPO / "manifests" / "bottlerocket-update-operator.yaml"
CRD_RELEASE = "brupop-crd"
OPERATOR_RELEASE = "brupop"
MANIFEST_HEADER = (
    "# brupop's whole install in one file, for `kubectl apply -f`: the namespace, then `helm template` of\n"
    "# charts/bottlerocket-shadow and charts/bottlerocket-update-operator with their default values in\n"
    "# namespace brupop-bottlerocket-aws. Rendered by `python -m integ.helm manifest`; do not edit by hand:\n"
    "# change the charts (README: Install).\n"
)


class HelmError(RuntimeError):
    pass


@functools.cache
def _binary() -> Path:
    return helm_binary()


def helm(*args: str, kubeconfig: str | None = None) -> str:
    """Run helm; its standard output, or HelmError with its standard error."""
    home = CACHE / "helm-home"
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
    }
    if kubeconfig is not None:
        env["KUBECONFIG"] = kubeconfig
    result = subprocess.run([str(_binary()), *args], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result.stdout


def _with_values(values: Sequence[Mapping[str, Any]], run: Callable[[list[str]], str]) -> str:
    """Call `run(flags)` with one `--values FILE` flag per mapping (JSON is YAML)."""
    with tempfile.TemporaryDirectory() as scratch:
        flags: list[str] = []
        for index, mapping in enumerate(values):
            path = Path(scratch) / f"values-{index}.json"
            path.write_text(json.dumps(mapping))
            flags += ["--values", str(path)]
        return run(flags)


def template(
    chart: Path, *, release: str, namespace: str = NAMESPACE, values: Sequence[Mapping[str, Any]] = ()
) -> str:
    return _with_values(
        values, lambda flags: helm("template", release, str(chart), "--namespace", namespace, *flags)
    )


def lint(chart: Path, *, values: Sequence[Mapping[str, Any]] = ()) -> str:
    return _with_values(values, lambda flags: helm("lint", "--strict", str(chart), *flags))


def documents(text: str) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render(
    chart: Path, *, release: str, namespace: str = NAMESPACE, values: Sequence[Mapping[str, Any]] = ()
) -> list[Obj]:
    """The chart's objects as `helm template` renders them."""
    return documents(template(chart, release=release, namespace=namespace, values=values))


@functools.cache
def _defaults(namespace: str) -> tuple[Obj, ...]:
    return (
        *render(CRD_CHART, release=CRD_RELEASE, namespace=namespace),
        *render(OPERATOR_CHART, release=OPERATOR_RELEASE, namespace=namespace),
    )


def chart_objects(namespace: str = NAMESPACE) -> list[Obj]:
    """Every object both charts create with their defaults in `namespace` (fresh copies)."""
    return json.loads(json.dumps(_defaults(namespace)))  # type: ignore[no-any-return]


def find(objects: Iterable[Obj], kind: str, name: str) -> Obj:
    (found,) = (o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)
    return found


def namespace_document(name: str) -> str:
    labels = "  labels:\n    app.kubernetes.io/part-of: brupop\n"
    return f"---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n{labels}"


def render_manifest() -> str:
    return (
        MANIFEST_HEADER
        + namespace_document(NAMESPACE)
        + template(CRD_CHART, release=CRD_RELEASE)
        + template(OPERATOR_CHART, release=OPERATOR_RELEASE)
    )


def install(
    kubeconfig: str,
    chart: Path,
    *,
    release: str,
    namespace: str,
    values: Sequence[Mapping[str, Any]] = (),
    upgrade: bool = False,
) -> str:
    """`helm install` (or `helm upgrade`) into `namespace`, waiting until the workloads are ready."""
    verb = ["upgrade"] if upgrade else ["install", "--create-namespace"]
    return _with_values(
        values,
        lambda flags: helm(
            *verb,
            release,
            str(chart),
            "--namespace",
            namespace,
            "--wait",
            "--timeout",
            "180s",
            *flags,
            kubeconfig=kubeconfig,
        ),
    )


def uninstall(kubeconfig: str, *, release: str, namespace: str) -> str:
    return helm(
        "uninstall", release, "--namespace", namespace, "--wait", "--timeout", "180s", kubeconfig=kubeconfig
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m integ.helm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    manifest = sub.add_parser("manifest", help="render manifests/bottlerocket-update-operator.yaml")
    manifest.add_argument("--check", action="store_true", help="only report whether the file is stale")
    args = parser.parse_args(argv)
    text = render_manifest()
    if args.check:
        if not MANIFEST.is_file() or MANIFEST.read_text() != text:
            print(f"{MANIFEST} is stale: run `python -m integ.helm manifest`", file=sys.stderr)
            return 1
        return 0
    MANIFEST.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
