"""cert-manager's CRDs from its own Go module (pinned), so the install manifest's Issuers and Certificates can
be checked by the real API server. The module's CRD files are Helm templates whose template markers sit in
comments and label values; the labels are replaced with plain ones."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from brupop.kube.client import KubeClient
from integ.gomodules import module_dir
from integ.kubetools import install_crd

MODULE = "github.com/cert-manager/cert-manager"
VERSION = "v1.16.2"


def crd_files() -> list[Path]:
    return sorted((module_dir(MODULE, VERSION) / "deploy" / "crds").glob("crd-*.yaml"))


def crds() -> list[dict[str, Any]]:
    found = []
    for path in crd_files():
        crd = yaml.safe_load(path.read_text())
        crd["metadata"]["labels"] = {"app.kubernetes.io/name": "cert-manager"}
        crd["metadata"].pop("annotations", None)
        found.append(crd)
    return found


async def install(kube: KubeClient) -> list[str]:
    installed = []
    for crd in crds():
        await install_crd(kube, crd)
        installed.append(crd["metadata"]["name"])
    return installed
