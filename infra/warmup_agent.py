"""kiln model warm-up: read the model once, then remove the warming taint from this node.

Runs as the init container of the ``kiln-model-warmup`` DaemonSet (shipped to the
cluster in a ConfigMap, run by a stock ``python`` image, so: standard library only).

A volume restored from a snapshot fetches each block from S3 on first read. Reading
every file once, before any model Job may land here, means Jobs find the model
warm. Then the node's ``kiln.dev/model-warming`` taint is removed — only from the
node this pod runs on (its name comes from the downward API), and with the node's
resourceVersion in the patch so a concurrent change to the taints is never lost.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CHUNK = 8 << 20


def _read_file(path: Path) -> int:
    n = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            block = fh.read(CHUNK)
            if not block:
                return n
            n += len(block)


def read_tree(root: Path, workers: int = 4, log: Callable[[str], None] = print) -> tuple[int, int]:
    """Read every regular file under ``root`` once; return (files, bytes)."""
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    start, total = time.monotonic(), 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, n in enumerate(pool.map(_read_file, files), 1):
            total += n
            if i == len(files) or i % 50 == 0:
                secs = max(time.monotonic() - start, 1e-6)
                log(f"read {i}/{len(files)} files, {total / 2**20:.0f} MiB, {total / 2**20 / secs:.0f} MiB/s")
    return len(files), total


class Api:
    """The few Kubernetes API calls the agent makes, over plain HTTPS."""

    def __init__(self, base_url: str, token: Optional[str] = None, context: Optional[ssl.SSLContext] = None):
        self.base_url, self.token, self.context = base_url.rstrip("/"), token, context

    @classmethod
    def in_cluster(cls) -> "Api":
        host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
        context = ssl.create_default_context(cafile=str(SA_DIR / "ca.crt"))
        return cls(f"https://{host}:{port}", (SA_DIR / "token").read_text().strip(), context)

    def _call(self, method: str, path: str, body: Optional[dict] = None, content_type: str = "application/json") -> dict:
        req = urllib.request.Request(self.base_url + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
        req.add_header("Accept", "application/json")
        if body is not None:
            req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        with urllib.request.urlopen(req, context=self.context, timeout=30) as resp:
            return json.loads(resp.read() or b"{}")

    def get_node(self, name: str) -> dict:
        return self._call("GET", f"/api/v1/nodes/{name}")

    def patch_node(self, name: str, patch: dict) -> dict:
        return self._call("PATCH", f"/api/v1/nodes/{name}", patch, "application/merge-patch+json")


def untaint_patch(node: dict, key: str) -> Optional[dict]:
    """The merge patch that drops taint ``key`` (any effect), or None when it is not there.

    A merge patch replaces the whole taints list, so it carries the resourceVersion
    it was computed from: the API server refuses it (409) if the taints moved meanwhile.
    """
    taints = (node.get("spec") or {}).get("taints") or []
    kept = [t for t in taints if t.get("key") != key]
    if len(kept) == len(taints):
        return None
    return {"metadata": {"resourceVersion": node["metadata"]["resourceVersion"]}, "spec": {"taints": kept}}


def remove_taint(api: Api, node_name: str, key: str, attempts: int = 10,
                 log: Callable[[str], None] = print) -> bool:
    """Remove taint ``key`` from ``node_name``. True if removed now, False if it was already gone."""
    for attempt in range(1, attempts + 1):
        patch = untaint_patch(api.get_node(node_name), key)
        if patch is None:
            log(f"node {node_name} has no {key} taint")
            return False
        try:
            api.patch_node(node_name, patch)
            log(f"removed taint {key} from node {node_name}")
            return True
        except urllib.error.HTTPError as exc:
            if exc.code != 409:
                raise
            log(f"node {node_name} changed meanwhile (attempt {attempt}); re-reading")
    raise RuntimeError(f"could not remove taint {key} from node {node_name} after {attempts} attempts")


def main(env: Optional[dict] = None, api: Optional[Callable[[], Api]] = None) -> int:
    env = os.environ if env is None else env
    node = env["NODE_NAME"]
    root = Path(env.get("MODEL_PATH", "/model"))
    key = env.get("TAINT_KEY", "kiln.dev/model-warming")
    if not root.is_dir():
        print(f"model path {root} is not a directory; leaving the {key} taint in place", file=sys.stderr)
        return 1
    files, size = read_tree(root)
    if files == 0:
        # An empty directory means the model volume is not mounted: stay tainted.
        print(f"no files under {root}; leaving the {key} taint in place", file=sys.stderr)
        return 1
    print(f"model warm: {files} files, {size / 2**30:.1f} GiB")
    remove_taint((api or Api.in_cluster)(), node, key)
    return 0


if __name__ == "__main__":
    sys.exit(main())
