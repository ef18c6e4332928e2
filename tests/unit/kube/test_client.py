import base64
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import respx

from brupop.kube.client import (
    NODES,
    PODS,
    SHADOWS,
    TOKEN_REVIEWS,
    ApiError,
    ApiUnavailableError,
    KubeClient,
    Retries,
    unavailable,
)
from brupop.kube.config import KubeConfig, KubeConfigError
from brupop.kube.informer import ResourceExpiredError
from brupop.kube.retry import Backoff

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


@respx.mock
async def test_no_answer_is_an_api_error_that_is_retryable(client: KubeClient) -> None:
    """Connection refused or a timeout (a kube-apiserver restarting) is an ApiError callers already handle,
    marked retryable, never a bare httpx exception that escapes every `except ApiError`."""
    respx.get(f"{SERVER}/api/v1/nodes/n1").mock(side_effect=httpx.ConnectError("connection refused"))
    respx.get(f"{SERVER}/api/v1/nodes").mock(side_effect=httpx.ReadTimeout("timed out"))
    for call in (client.get(NODES, "n1"), client.list(NODES)):
        with pytest.raises(ApiError) as info:
            await call
        assert isinstance(info.value, ApiUnavailableError)
        assert info.value.retryable
        assert not info.value.not_found
        assert not info.value.conflict


@respx.mock
async def test_watch_transport_errors_are_api_errors(client: KubeClient) -> None:
    respx.get(f"{SERVER}/api/v1/nodes").mock(side_effect=httpx.ConnectError("connection refused"))
    with pytest.raises(ApiUnavailableError):
        async for _ in client.watch(NODES, resource_version="1"):
            pass


@pytest.mark.parametrize(
    ("answer", "retryable", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "3"}, json={"kind": "Status"}), True, 3.0),
        (
            httpx.Response(
                429, json={"kind": "Status", "details": {"retryAfterSeconds": 2}, "message": "slow down"}
            ),
            True,
            2.0,
        ),
        (httpx.Response(503, text="unavailable"), True, None),
        (httpx.Response(500, json={"kind": "Status", "message": "etcd"}), True, None),
        (httpx.Response(409, json={"kind": "Status", "reason": "Conflict"}), False, None),
        (httpx.Response(404, json={"kind": "Status", "reason": "NotFound"}), False, None),
    ],
)
@respx.mock
async def test_errors_say_whether_to_retry_and_when(
    client: KubeClient, answer: httpx.Response, retryable: bool, retry_after: float | None
) -> None:
    respx.get(f"{SERVER}/api/v1/nodes/n1").mock(return_value=answer)
    with pytest.raises(ApiError) as info:
        await client.get(NODES, "n1")
    assert (info.value.retryable, info.value.retry_after) == (retryable, retry_after)


@respx.mock
async def test_a_client_with_retries_rides_out_an_outage_and_honours_retry_after(token_file: Path) -> None:
    config = KubeConfig(server=SERVER, token_file=token_file)
    retries = Retries(attempts=4, backoff=Backoff(base=0.0, cap=0.0))
    route = respx.patch(f"{SERVER}/api/v1/nodes/n1").mock(
        side_effect=[
            httpx.ConnectError("connection refused"),
            httpx.Response(503, text="starting"),
            httpx.Response(429, headers={"Retry-After": "0"}, json={"kind": "Status"}),
            httpx.Response(200, json={"kind": "Node"}),
        ]
    )
    async with KubeClient(config, transport=httpx.AsyncHTTPTransport(), retries=retries) as kube:
        assert await kube.merge_patch(NODES, "n1", {"metadata": {}}) == {"kind": "Node"}
        assert route.call_count == 4
        conflict = respx.get(f"{SERVER}/api/v1/nodes/n2").mock(
            return_value=httpx.Response(409, json={"kind": "Status"})
        )
        with pytest.raises(ApiError):
            await kube.get(NODES, "n2")
        assert conflict.call_count == 1  # only what may succeed later is retried


@pytest.mark.parametrize(
    ("name", "segment"),
    [
        ("a/../pods", "a%2F..%2Fpods"),
        ("x?watch=1", "x%3Fwatch%3D1"),
        ("x#frag", "x%23frag"),
        ("50%", "50%25"),
        ("a b", "a%20b"),
    ],
)
def test_names_cannot_change_the_shape_of_a_url(name: str, segment: str) -> None:
    assert NODES.path(name=name) == f"/api/v1/nodes/{segment}"
    assert PODS.path(namespace=name, name="p", subresource=name) == (
        f"/api/v1/namespaces/{segment}/pods/p/{segment}"
    )


@pytest.mark.parametrize("name", [".", "..", ""])
def test_dot_segments_and_empty_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid path segment"):
        NODES.path(name=name)
    with pytest.raises(ValueError, match="not a valid path segment"):
        PODS.path(namespace=name)


@respx.mock
async def test_a_crafted_name_reaches_only_its_own_url(client: KubeClient) -> None:
    route = respx.get(f"{SERVER}/api/v1/nodes/..%2Fpods").mock(return_value=httpx.Response(404, json={}))
    with pytest.raises(ApiError):
        await client.get(NODES, "../pods")
    assert route.called


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (ApiError(500, "InternalError", "etcd"), True),
        (ApiError(503, "ServiceUnavailable", "shutting down"), True),
        (ApiError(429, "TooManyRequests", "throttled"), True),
        (ApiError(0, "Unavailable", "no answer"), True),
        (ApiError(404, "NotFound", "gone"), False),
        (ApiError(403, "Forbidden", "rbac"), False),
        (ValueError("a bug"), False),
    ],
)
def test_which_failures_mean_the_api_server_could_not_answer(error: Exception, expected: bool) -> None:
    assert unavailable(error) is expected
