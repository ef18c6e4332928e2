"""The install's sources without Helm: the CRD template the generator writes into the CRD chart, the charts'
versions, their values documented and declared, and every environment variable the programs read set by
the chart. Rendering with the real helm binary is tested in tests/integ/test_charts.py."""

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from brupop import manifests
from brupop.models.crd import custom_resource_definition

REPO = Path(__file__).resolve().parents[2]
CHARTS = REPO / "charts"
OPERATOR = CHARTS / "bottlerocket-update-operator"
CRD_CHART = CHARTS / "bottlerocket-shadow"


def test_the_chart_crd_templates_are_generated_from_the_models() -> None:
    assert manifests.stale_files(REPO) == []


def test_check_mode_reports_a_stale_template(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "custom-resource-definition.yaml is stale" in err
    assert "update-policy-crd.yaml is stale" in err
    assert manifests.main(["--root", str(tmp_path)]) == 0
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 0
    shadow = tmp_path / manifests.CHART_TEMPLATES / "custom-resource-definition.yaml"
    shadow.write_text(manifests.shadow_crd_template().replace("v2", "v3"))
    assert manifests.main(["--root", str(tmp_path), "--check"]) == 1


def _filled_in(template: str, *, namespace: str, port: int, keep: bool) -> Any:
    """The template as Helm would render it for this namespace and port, without Helm."""
    text = template.replace('{{ include "bottlerocket-shadow.namespace" . }}', namespace)
    text = text.replace("{{ .Values.apiserverServicePort | int }}", str(port))
    if not keep:
        text = re.sub(r"\{\{- if \.Values\.keep \}\}.*?\{\{- end \}\}\n", "", text, flags=re.S)
    text = re.sub(r"^\s*\{\{.*\}\}\n", "", text, flags=re.M)  # lines of template actions only
    return yaml.safe_load(text)


def test_only_the_install_s_choices_are_left_to_helm() -> None:
    template = manifests.shadow_crd_template()
    rendered = _filled_in(template, namespace="ops", port=8443, keep=True)
    expected = custom_resource_definition(namespace="ops", service_port=8443)
    assert rendered["spec"] == expected["spec"]
    assert rendered["metadata"]["name"] == expected["metadata"]["name"]
    assert rendered["metadata"]["annotations"] == {
        "cert-manager.io/inject-ca-from": "ops/brupop-apiserver-certificate",
        "helm.sh/resource-policy": "keep",
    }
    dropped = _filled_in(template, namespace="ops", port=8443, keep=False)
    assert "helm.sh/resource-policy" not in dropped["metadata"]["annotations"]


def test_the_charts_install_this_version_of_brupop() -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for chart in (OPERATOR, CRD_CHART):
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        assert meta["apiVersion"] == "v2"
        assert meta["appVersion"] == version, chart.name


def _schema_leaves(schema: dict[str, Any], prefix: str = "") -> set[str]:
    """Dotted paths of the values the schema declares (a value without declared properties is a leaf)."""
    leaves = set()
    for key, sub in schema.get("properties", {}).items():
        if key == "global":  # Helm's, for subcharts
            continue
        path = f"{prefix}{key}"
        leaves |= _schema_leaves(sub, f"{path}.") if "properties" in sub else {path}
    return leaves


def _documented_keys(values_text: str) -> dict[str, bool]:
    """Each key of values.yaml (dotted path) and whether a comment stands right above it, or above the run
    of sibling keys it belongs to (e.g. nodeSelector, tolerations, affinity under one placement comment)."""
    found: dict[str, bool] = {}
    stack: list[tuple[int, str]] = []
    previous: tuple[str, int, bool] | None = None  # (kind, indent, documented)
    for line in values_text.splitlines():
        stripped = line.strip()
        if not stripped:
            previous = None
            continue
        indent = len(line) - len(line.lstrip())
        if stripped.startswith("#"):
            previous = ("comment", indent, True)
            continue
        match = re.match(r"^([A-Za-z][\w]*):", stripped)
        if match is None or line.lstrip().startswith("-"):
            previous = ("other", indent, False)
            continue
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([name for _, name in stack] + [match.group(1)])
        documented = previous is not None and (
            previous[0] == "comment" or (previous[0] == "key" and previous[1] == indent and previous[2])
        )
        found[path] = documented
        stack.append((indent, match.group(1)))
        previous = ("key", indent, documented)
    return found


def test_every_value_is_declared_and_documented() -> None:
    schema = json.loads((OPERATOR / "values.schema.json").read_text())
    keys = _documented_keys((OPERATOR / "values.yaml").read_text())
    leaves = _schema_leaves(schema)
    assert leaves - set(keys) == set(), "declared in values.schema.json but without a default in values.yaml"
    undocumented = sorted(leaf for leaf in leaves if not keys[leaf])
    assert undocumented == [], "values without a comment in values.yaml"
    crd_schema = json.loads((CRD_CHART / "values.schema.json").read_text())
    crd_keys = _documented_keys((CRD_CHART / "values.yaml").read_text())
    assert _schema_leaves(crd_schema) == {key for key in crd_keys if "." not in key}
    assert all(crd_keys.values())


def test_the_documentation_check_sees_a_missing_comment() -> None:
    keys = _documented_keys("a:\n  # b's comment\n  b: 1\n  c: 2\n\n  d: 3\n# e\ne: {}\n")
    assert keys == {"a": False, "a.b": True, "a.c": True, "a.d": False, "e": True}


# Read by the programs but not set by the chart: the kubelet and the in-cluster config provide these, or
# they point at paths the chart's mounts fix (tests point them elsewhere).
NOT_FROM_THE_CHART = {
    "KUBECONFIG",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "BRUPOP_APISERVER_URL",
    "BRUPOP_HOST_SOCKET",
    "BRUPOP_TOKEN_FILE",
    "BRUPOP_CA_FILE",
    "BRUPOP_BOOT_ID_FILE",
    "APISERVER_TLS_DIR",
}
WORKSTATION_PROGRAMS = ("plugin",)
"""`kubectl brupop` runs on an operator's machine (HOME, KUBECONFIG), never from the chart."""


def _variables_read_by_the_programs() -> set[str]:
    names = set()
    for path in (REPO / "brupop").rglob("*.py"):
        if path.relative_to(REPO / "brupop").parts[0] in WORKSTATION_PROGRAMS:
            continue
        text = path.read_text()
        names |= set(re.findall(r"\(\s*env,\s*\"([A-Z][A-Z0-9_]+)\"", text))
        names |= set(re.findall(r"env(?:iron)?\.get\(\s*\"([A-Z][A-Z0-9_]+)\"", text))
    return names


def test_the_chart_sets_every_environment_variable_the_programs_read() -> None:
    read = _variables_read_by_the_programs()
    assert {"MAX_CONCURRENT_UPDATE", "BRUPOP_NAMESPACE", "DRAIN_TIMEOUT", "LOGGING_FORMATTER"} <= read
    templates = "\n".join(p.read_text() for p in (OPERATOR / "templates").iterdir())
    set_by_chart = set(re.findall(r"- name: ([A-Z][A-Z0-9_]+)$", templates, flags=re.M))
    assert read - NOT_FROM_THE_CHART - set_by_chart == set()
    assert NOT_FROM_THE_CHART & set_by_chart == set()
