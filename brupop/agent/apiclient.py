"""The agent's client for the brupop apiserver: the Rust brupop's routes and headers, the projected token
re-read on every call (tokens rotate), and the CA from the mounted secret, read again when it changes.

Connection errors, 429 and 5xx answers are retried with full-jitter exponential back-off for `retry_for`
seconds (a minute by default) counted from the first failure, so a restarting apiserver (or a replica lost
in the middle of a long drain) costs a wait, not a recorded failure; any other 4xx is an answer (a drain's
409 timeout included) and is raised at once.

cert-manager renews the CA in the mounted secret; the kubelet then swaps the file. The file is read again
after a TLS failure and at most every `ca_check_interval` seconds otherwise; a changed CA gets a new SSL
context and HTTP client for the requests that follow, and the old client is closed once the requests
already using it (a long drain) are done.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import structlog

from brupop.agent.causes import causes
from brupop.models.shadow import ShadowStatus

NODE_RESOURCE = "/bottlerocket-node-resource"
log = structlog.get_logger("brupop.agent")


class ApiserverError(Exception):
    def __init__(
        self, message: str, *, status: int | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail or {}


class ApiserverClient:
    def __init__(
        self,
        *,
        base_url: str,
        node_name: str,
        token_file: Path,
        ca_file: Path | None,
        retry_for: float = 60.0,
        backoff_cap: float = 10.0,
        timeout: float = 3600.0,
        ca_check_interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.node_name = node_name
        self.node_uid = ""
        self.base_url = base_url
        self._token_file = token_file
        self._ca_file = ca_file
        self._timeout = timeout
        self._retry_for = retry_for
        self._cap = backoff_cap
        self._ca_check_interval = ca_check_interval
        self._clock = clock
        self._sleep = sleep
        self._ca = ca_file.read_bytes() if ca_file is not None else None
        self._next_ca_check = clock() + ca_check_interval
        self._http = self._client(_context(self._ca) if self._ca is not None else True)
        self._in_flight: dict[httpx.AsyncClient, int] = {}
        self._retired: set[httpx.AsyncClient] = set()

    def _client(self, verify: ssl.SSLContext | bool) -> httpx.AsyncClient:
        # A drain can legitimately take as long as the apiserver's DRAIN_TIMEOUT: a long read timeout.
        return httpx.AsyncClient(
            base_url=self.base_url, verify=verify, timeout=httpx.Timeout(30.0, read=self._timeout)
        )

    async def close(self) -> None:
        for http in (self._http, *self._retired):
            await http.aclose()
        self._retired.clear()

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token_file.read_text().strip()
        except OSError as err:
            raise ApiserverError(f"cannot read the service account token {self._token_file}: {err}") from None
        return {"BrupopNodeName": self.node_name, "BrupopNodeUid": self.node_uid, "BrupopK8sAuthToken": token}

    async def _reload_ca(self) -> None:
        """Take up a changed CA file (checked at most every `ca_check_interval`, or after a TLS failure)."""
        if self._ca_file is None or self._clock() < self._next_ca_check:
            return
        self._next_ca_check = self._clock() + self._ca_check_interval
        try:
            pem = self._ca_file.read_bytes()
            if pem == self._ca:
                return
            context = _context(pem)
        except (OSError, ssl.SSLError, ValueError) as err:  # mid-swap, or half written: keep the old one
            log.warning("cannot load the apiserver CA yet", ca_file=str(self._ca_file), error=str(err))
            return
        old, self._http, self._ca = self._http, self._client(context), pem
        log.info("loaded a renewed apiserver CA", ca_file=str(self._ca_file))
        if old in self._in_flight:
            self._retired.add(old)  # closed when its last request is done
        else:
            await old.aclose()

    async def _send(self, method: str, path: str, *, json: Any) -> httpx.Response:
        await self._reload_ca()
        headers = self._headers()
        http = self._http
        self._in_flight[http] = self._in_flight.get(http, 0) + 1
        try:
            return await http.request(method, path, json=json, headers=headers)
        finally:
            self._in_flight[http] -= 1
            if not self._in_flight[http]:
                del self._in_flight[http]
                if http in self._retired:
                    self._retired.discard(http)
                    await http.aclose()

    async def _call(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        first_failure: float | None = None
        attempts = 0
        while True:
            attempts += 1
            try:
                answer = await self._send(method, path, json=json)
            except httpx.TransportError as err:
                last = f"{method} {path}: {str(err) or type(err).__name__}"
                if _tls_failure(err):
                    self._next_ca_check = self._clock()  # perhaps the CA was renewed: look now
            else:
                if answer.status_code < 400:
                    return answer
                if answer.status_code != 429 and answer.status_code < 500:
                    detail = _json(answer)
                    reason = detail.get("error") or answer.text
                    raise ApiserverError(
                        f"{method} {path}: {answer.status_code} {reason}",
                        status=answer.status_code,
                        detail=detail,
                    )
                last = f"{method} {path}: {answer.status_code} {answer.text[:300]}"
            now = self._clock()
            first_failure = now if first_failure is None else first_failure
            left = self._retry_for - (now - first_failure)
            if left <= 0:
                raise ApiserverError(
                    f"{last} (gave up after {attempts} attempts in {now - first_failure:.0f}s)"
                )
            delay = random.uniform(0, min(self._cap, 0.1 * 2 ** min(attempts - 1, 32)))
            await self._sleep(min(delay, left))

    async def create_shadow(self) -> None:
        selector = {"node_selector": {"node_name": self.node_name, "node_uid": self.node_uid}}
        await self._call("POST", NODE_RESOURCE, json=selector)

    async def update_status(self, status: ShadowStatus) -> None:
        await self._call("PUT", NODE_RESOURCE, json=status.to_wire())

    async def cordon_and_drain(self) -> None:
        await self._call("POST", f"{NODE_RESOURCE}/cordon-and-drain")

    async def uncordon(self) -> None:
        await self._call("POST", f"{NODE_RESOURCE}/uncordon")

    async def exclude_from_lb(self) -> None:
        await self._call("POST", f"{NODE_RESOURCE}/exclude-from-lb")

    async def remove_exclusion_from_lb(self) -> None:
        await self._call("POST", f"{NODE_RESOURCE}/remove-exclusion-from-lb")


def _context(ca: bytes) -> ssl.SSLContext:
    return ssl.create_default_context(cadata=ca.decode())


def _tls_failure(err: BaseException) -> bool:
    return any(isinstance(cause, ssl.SSLError) for cause in causes(err))


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
