"""prometheus-operator's CRDs (ServiceMonitor, PrometheusRule, ...) from its own Go module (pinned), so the
chart's optional monitoring objects can be checked by the real API server."""

from __future__ import annotations

from typing import Any

import yaml

from integ.gomodules import module_dir

MODULE = "github.com/prometheus-operator/prometheus-operator"
VERSION = "v0.90.1"
KINDS = ("servicemonitors", "prometheusrules")


def crds() -> list[dict[str, Any]]:
    directory = module_dir(MODULE, VERSION) / "example" / "prometheus-operator-crd"
    return [yaml.safe_load((directory / f"monitoring.coreos.com_{kind}.yaml").read_text()) for kind in KINDS]
