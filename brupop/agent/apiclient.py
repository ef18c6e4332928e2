"""The agent's client for the brupop apiserver: the Rust brupop's routes and headers, the projected token
re-read on every call (tokens rotate), the CA from the mounted secret, and retries with full-jitter
exponential back-off for 5xx answers and connection errors only (a 4xx is the caller's mistake)."""

from __future__ import annotations

import asyncio
import random
import ssl
from pathlib import Path
from typing import Any

import httpx

from brupop.models.shadow import ShadowStatus

NODE_RESOURCE = "/bottlerocket-node-resource"


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
        attempts: int = 6,
        backoff_cap: float = 10.0,
        timeout: float = 3600.0,
    ) -> None:
        self.node_name = node_name
        self.node_uid = ""
        self._token_file = token_file
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        # A drain can legitimately take as long as the apiserver's DRAIN_TIMEOUT: a long read timeout.
        self._http = httpx.AsyncClient(
            base_url=base_url, verify=verify, timeout=httpx.Timeout(30.0, read=timeout)
        )
        self._attempts = attempts
        self._cap = backoff_cap

    async def close(self) -> None:
        await self._http.aclose()

    def _headers(self) -> dict[str, str]:
        try:
            token = self._token_file.read_text().strip()
        except OSError as err:
            raise ApiserverError(f"cannot read the service account token {self._token_file}: {err}") from None
        return {"BrupopNodeName": self.node_name, "BrupopNodeUid": self.node_uid, "BrupopK8sAuthToken": token}

    async def _call(self, method: str, path: str, *, json: Any = None) -> httpx.Response:
        last = ""
        for attempt in range(self._attempts):
            try:
                answer = await self._http.request(method, path, json=json, headers=self._headers())
            except httpx.TransportError as err:
                last = f"{method} {path}: {str(err) or type(err).__name__}"
            else:
                if answer.status_code < 500:
                    if answer.status_code >= 400:
                        detail = _json(answer)
                        reason = detail.get("error") or answer.text
                        raise ApiserverError(
                            f"{method} {path}: {answer.status_code} {reason}",
                            status=answer.status_code,
                            detail=detail,
                        )
                    return answer
                last = f"{method} {path}: {answer.status_code} {answer.text[:300]}"
            if attempt + 1 < self._attempts:
                await asyncio.sleep(random.uniform(0, min(self._cap, 0.1 * 2**attempt)))
        raise ApiserverError(f"{last} (gave up after {self._attempts} attempts)")

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


def _json(answer: httpx.Response) -> dict[str, Any]:
    try:
        body = answer.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
