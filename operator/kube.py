"""A small generic Kubernetes client for the children the operator owns.

The official `kubernetes` client does the HTTP, auth and TLS; this module only maps
(apiVersion, kind) to REST paths and runs the blocking calls in a thread pool so kopf's
event loop never waits on the network. Every call carries a timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kubernetes
import urllib3
from kubernetes.client.exceptions import ApiException

from longreach.operator.kinds import ADAPTERS

TIMEOUT = 30  # seconds per API call; kopf retries the handler on failure

# Kinds the operator creates or reads (ours, every kind's children, and Kueue's Workloads of
# queued children), by plural name.
PLURALS = (
    {a.kind: a.plural for a in ADAPTERS}
    | {c.kind: c.plural for a in ADAPTERS for c in a.children_kinds}
    | {"Workload": "workloads"}
)


def path(api_version: str, kind: str, namespace: str, name: str = "") -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    out = f"{base}/namespaces/{namespace}/{PLURALS[kind]}"
    return f"{out}/{name}" if name else out


class Kube:
    """Create, get, patch and delete namespaced objects of any kind in PLURALS."""

    def __init__(self, workers: int = 32) -> None:
        try:
            kubernetes.config.load_incluster_config()
        except kubernetes.config.ConfigException:
            kubernetes.config.load_kube_config()
        config = kubernetes.client.Configuration.get_default_copy()
        # One kept-alive connection per worker thread: urllib3's default pool (5 per CPU)
        # discards the rest after each request, and every new connection costs a TLS
        # handshake and a load of the CA bundle (a third of the operator's CPU under load).
        config.connection_pool_maxsize = workers
        self.api = kubernetes.client.ApiClient(config)
        if not self.api.configuration.verify_ssl:
            # The kubeconfig asked for no TLS verification (test clusters): say it once, not
            # on every request.
            logging.getLogger(__name__).warning("TLS verification of the API server is off")
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        self.workers = workers
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kube")

    def _call(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        method, full_url, headers, payload, post = self.api.param_serialize(
            method,
            url,
            query_params=query or [],
            header_params={"Content-Type": content_type, "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(
            method, full_url, headers, payload, post, _request_timeout=TIMEOUT
        )
        response.read()
        if not 200 <= response.status < 300:
            raise ApiException(http_resp=response)
        return json.loads(response.data) if response.data else None

    async def run(
        self,
        method: str,
        url: str,
        body: Any = None,
        content_type: str = "application/json",
        query: list[tuple[str, str]] | None = None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self.pool, lambda: self._call(method, url, body, content_type, query)
        )

    async def get(
        self, api_version: str, kind: str, namespace: str, name: str
    ) -> dict[str, Any] | None:
        try:
            return await self.run("GET", path(api_version, kind, namespace, name))
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def list(
        self, api_version: str, kind: str, namespace: str, label_selector: str
    ) -> list[dict[str, Any]]:
        """The objects matching a label selector; none when the kind is not served (404)."""
        query = [("labelSelector", label_selector)]
        try:
            found = await self.run("GET", path(api_version, kind, namespace), query=query)
        except ApiException as e:
            if e.status == 404:
                return []
            raise
        return list(found.get("items") or [])

    async def create(self, obj: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Create `obj`; if it exists already (409), return the existing one. -> (object, created)."""
        meta = obj["metadata"]
        try:
            return await self.run(
                "POST", path(obj["apiVersion"], obj["kind"], meta["namespace"]), obj
            ), True
        except ApiException as e:
            if e.status != 409:
                raise
        existing = await self.get(obj["apiVersion"], obj["kind"], meta["namespace"], meta["name"])
        if existing is None:  # deleted between the two calls; the next reconcile creates it
            raise kubernetes.client.exceptions.ApiException(
                status=409, reason="conflict, then gone"
            )
        return existing, False

    async def patch(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        return await self.run(
            "PATCH", path(api_version, kind, namespace, name), patch, "application/merge-patch+json"
        )

    async def patch_status(
        self, api_version: str, kind: str, namespace: str, name: str, patch: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Merge-patch the status subresource; the object written, or None when it is gone."""
        try:
            return await self.run(
                "PATCH",
                path(api_version, kind, namespace, name) + "/status",
                patch,
                "application/merge-patch+json",
            )
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    async def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        try:
            await self.run(
                "DELETE",
                path(api_version, kind, namespace, name),
                {"propagationPolicy": "Background"},
            )
        except ApiException as e:
            if e.status != 404:
                raise
