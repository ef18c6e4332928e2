import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

from brupop.kube.client import NODES, PODS, SHADOWS, TOKEN_REVIEWS, ApiError, KubeClient
from brupop.kube.config import KubeConfig, KubeConfigError
from brupop.kube.informer import ResourceExpiredError

SERVER = "https://kube.test:6443"


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "token"
    path.write_text("first\n")
    return path


@pytest.fixture
async def client(token_file: Path):
    config = KubeConfig(server=SERVER, token_file=token_file)
    async with KubeClient(config, transport=httpx.AsyncHTTPTransport()) as kube:
        yield kube


def test_resource_paths() -> None:
    assert NODES.path(name="n1") == "/api/v1/nodes/n1"
    assert (
        PODS.path(namespace="ns", name="p", subresource="eviction") == "/api/v1/namespaces/ns/pods/p/eviction"
    )
    assert PODS.path() == "/api/v1/pods"
    assert SHADOWS.path(namespace="b", name="brs-x", subresource="status") == (
        "/apis/brupop.bottlerocket.aws/v2/namespaces/b/bottlerocketshadows/brs-x/status"
    )
    assert TOKEN_REVIEWS.path() == "/apis/authentication.k8s.io/v1/tokenreviews"


@respx.mock
async def test_token_is_reread_on_every_request(client: KubeClient, token_file: Path) -> None:
    route = respx.get(f"{SERVER}/api/v1/nodes/n1").mock(
        return_value=httpx.Response(200, json={"kind": "Node"})
    )
    await client.get(NODES, "n1")
    token_file.write_text("rotated")
    await client.get(NODES, "n1")
    assert [call.request.headers["Authorization"] for call in route.calls] == [
        "Bearer first",
        "Bearer rotated",
    ]


@respx.mock
async def test_list_follows_continue_tokens(client: KubeClient) -> None:
    route = respx.get(f"{SERVER}/api/v1/pods").mock(
        side_effect=[
            httpx.Response(
                200, json={"items": [{"a": 1}], "metadata": {"continue": "tok", "resourceVersion": "5"}}
            ),
            httpx.Response(200, json={"items": [{"b": 2}], "metadata": {"resourceVersion": "7"}}),
        ]
    )
    items, version = await client.list(PODS, field_selector="spec.nodeName=n1", label_selector="app=x")
    assert (items, version) == ([{"a": 1}, {"b": 2}], "7")
    first, second = (call.request.url.params for call in route.calls)
    assert first["fieldSelector"] == "spec.nodeName=n1"
    assert first["labelSelector"] == "app=x"
    assert "continue" not in first
    assert second["continue"] == "tok"


@respx.mock
async def test_merge_patch_sets_the_content_type(client: KubeClient) -> None:
    route = respx.patch(f"{SERVER}{SHADOWS.path(namespace='ns', name='brs-a', subresource='status')}").mock(
        return_value=httpx.Response(200, json={"ok": True})
    )
    assert await client.merge_patch(
        SHADOWS, "brs-a", {"status": {"x": None}}, namespace="ns", subresource="status"
    )
    request = route.calls[0].request
    assert request.headers["Content-Type"] == "application/merge-patch+json"
    assert json.loads(request.content) == {"status": {"x": None}}


@respx.mock
async def test_errors_carry_the_status_reason_and_message(client: KubeClient) -> None:
    respx.post(f"{SERVER}/api/v1/namespaces/ns/pods/p/eviction").mock(
        return_value=httpx.Response(
            429,
            json={
                "kind": "Status",
                "reason": "TooManyRequests",
                "message": "would violate the pod's disruption budget",
            },
        )
    )
    respx.get(f"{SERVER}/api/v1/nodes/gone").mock(return_value=httpx.Response(404, text="not json"))
    with pytest.raises(ApiError) as info:
        await client.create(PODS, {"kind": "Eviction"}, namespace="ns", name="p", subresource="eviction")
    assert info.value.too_many_requests
    assert "disruption budget" in info.value.message
    with pytest.raises(ApiError) as missing:
        await client.get(NODES, "gone")
    assert missing.value.not_found
    assert not missing.value.conflict


@respx.mock
async def test_watch_streams_events_and_maps_410(client: KubeClient) -> None:
    lines = "\n".join(
        json.dumps(e)
        for e in [
            {"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "2"}}},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "3"}}},
        ]
    )
    route = respx.get(f"{SERVER}/api/v1/nodes").mock(
        side_effect=[
            httpx.Response(200, text=lines + "\n\n"),
            httpx.Response(410, json={"kind": "Status", "message": "too old"}),
        ]
    )
    events = [e async for e in client.watch(NODES, resource_version="1", label_selector="a=b")]
    assert [kind for kind, _ in events] == ["ADDED", "BOOKMARK"]
    params = route.calls[0].request.url.params
    assert (params["watch"], params["resourceVersion"], params["allowWatchBookmarks"]) == ("1", "1", "true")
    with pytest.raises(ResourceExpiredError):
        async for _ in client.list_watch(NODES).watch("1"):
            pass


@respx.mock
async def test_list_watch_adapter_lists(client: KubeClient) -> None:
    respx.get(f"{SERVER}/api/v1/nodes").mock(
        return_value=httpx.Response(200, json={"items": [], "metadata": {"resourceVersion": "9"}})
    )
    assert await client.list_watch(NODES, label_selector="x=y").list() == ([], "9")


def write_kubeconfig(tmp_path: Path, user: dict) -> Path:
    path = tmp_path / "kubeconfig"
    ca = base64.b64encode(b"CA PEM").decode()
    path.write_text(
        json.dumps(
            {
                "current-context": "ctx",
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "work"}}],
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {"server": "https://127.0.0.1:6443/", "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": "u", "user": user}],
            }
        )
    )
    return path


def test_kubeconfig_with_inline_data_and_relative_files(tmp_path: Path) -> None:
    path = write_kubeconfig(
        tmp_path, {"client-certificate": "admin.crt", "client-key-data": base64.b64encode(b"KEY").decode()}
    )
    config = KubeConfig.from_kubeconfig(path)
    assert config.server == "https://127.0.0.1:6443"
    assert config.namespace == "work"
    assert config.ca_file is not None
    assert config.ca_file.read_bytes() == b"CA PEM"
    assert config.client_cert == tmp_path / "admin.crt"
    assert config.client_key is not None
    assert config.client_key.read_bytes() == b"KEY"
    assert KubeConfig.load({"KUBECONFIG": str(path)}).server == config.server


def test_kubeconfig_tokens(tmp_path: Path) -> None:
    assert KubeConfig.from_kubeconfig(write_kubeconfig(tmp_path, {"token": "abc"})).bearer_token() == "abc"


def test_a_json_kubeconfig_is_read_without_importing_yaml(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path, {"token": "abc"})
    probe = (
        "import sys; from pathlib import Path; from brupop.kube.config import KubeConfig; "
        f"KubeConfig.from_kubeconfig(Path({str(path)!r})); print('yaml' in sys.modules)"
    )
    answer = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert answer.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("- just a list", "is not a YAML mapping"),
        ('{"current-context": "nope", "contexts": []}', "no entry named 'nope' in contexts"),
        (":\n  - [", "cannot read kubeconfig"),
    ],
)
def test_bad_kubeconfigs_are_named(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "kc"
    path.write_text(content)
    with pytest.raises(KubeConfigError, match=message):
        KubeConfig.from_kubeconfig(path)


def test_in_cluster(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("sa-token")
    (tmp_path / "namespace").write_text("brupop-bottlerocket-aws")
    config = KubeConfig.in_cluster(
        {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}, directory=tmp_path
    )
    assert config.server == "https://[fd00::1]:443"
    assert config.namespace == "brupop-bottlerocket-aws"
    assert config.bearer_token() == "sa-token"
    with pytest.raises(KubeConfigError, match="KUBERNETES_SERVICE_HOST is not set"):
        KubeConfig.in_cluster({}, directory=tmp_path)
    with pytest.raises(KubeConfigError, match="needs the service account token"):
        KubeConfig.in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1"}, directory=tmp_path / "missing")
    (tmp_path / "token").unlink()
    with pytest.raises(KubeConfigError, match="cannot read the service account token"):
        config.bearer_token()
