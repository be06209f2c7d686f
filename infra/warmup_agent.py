"""kiln model warm-up: read the model once, then remove the warming taint from this node.

Runs as the init container of the ``kiln-model-warmup`` DaemonSet (shipped to the
cluster in a ConfigMap, run by a stock ``python`` image, so: standard library only).

A volume restored from a snapshot fetches each block from S3 on first read. Reading
every file once, before any model Job may land here, means Jobs find the model
warm. Then the node's ``kiln.dev/model-warming`` taint is removed — only from the
node this pod runs on (its name comes from the downward API), and with the node's
resourceVersion in the patch so a concurrent change to the taints is never lost.

Before it untaints, the agent checks what a Job on this node would get (fail
closed: anything it cannot read counts as wrong):

- the model directory is mounted read-only in its view (``statvfs`` ``ST_RDONLY``);
- the model the bake recorded on the volume (the ``current`` link the bake's
  ``record`` step writes, naming the version directory) is the version on the
  node's ``kiln.dev/model-version`` label — checked on the very node object the
  untaint patch is computed from, so a label that changes meanwhile makes the
  patch stale (409) and is checked again.

If either does not hold, the taint stays, the reason goes to stderr and to the
container's termination message (``kubectl describe pod`` shows it), and the
agent exits 1: the init container fails, and the rollout, which waits for new
nodes to lose the warming taint, rolls a bad AMI back at its deadline.
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
CURRENT_LINK = "current"                     # written by automation/bake/builder.sh (record)
DEFAULT_VERSION_LABEL = "kiln.dev/model-version"


class NotReadyToUntaint(RuntimeError):
    """The node must keep its warming taint; the message says why."""


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


def check_read_only(root: Path, statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> None:
    """Raise unless ``root`` is on a read-only mount in this process's view."""
    try:
        flags = statvfs(str(root)).f_flag
    except OSError as exc:
        raise NotReadyToUntaint(f"cannot tell whether model path {root} is mounted read-only: {exc}") from None
    if not flags & os.ST_RDONLY:
        raise NotReadyToUntaint(f"model path {root} is mounted read-write: a Job could change the model "
                                "(the model volume must be mounted read-only)")


def recorded_version(root: Path) -> str:
    """The model version the bake recorded on the volume: the version directory the ``current`` link names.

    The link is relative (``v6``) on AMIs baked since issue 12 and absolute (``/opt/models/v6``) before: its last
    component names the version either way, and that directory must exist here."""
    link = root / CURRENT_LINK
    try:
        target = os.readlink(link)
    except OSError as exc:
        raise NotReadyToUntaint(f"cannot read the model version the bake recorded ({link}): {exc}") from None
    version = target.rstrip("/").rsplit("/", 1)[-1]
    if version in ("", ".", "..") or not (root / version).is_dir():
        raise NotReadyToUntaint(f"the model version the bake recorded ({link} -> {target!r}) is not a version "
                                f"directory under {root}")
    return version


def version_problem(node: dict, on_disk: str, label: str = DEFAULT_VERSION_LABEL) -> Optional[str]:
    """Why the node's model-version label and the model on disk disagree, or None when they match."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    wanted = labels.get(label)
    if not isinstance(wanted, str) or not wanted:
        return f"node has no {label} label, so the model on disk ({on_disk}) cannot be checked against it"
    if wanted != on_disk:
        return f"model on disk is {on_disk} but the node's {label} label says {wanted} (wrong AMI for this node)"
    return None


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
                 log: Callable[[str], None] = print,
                 check: Callable[[dict], Optional[str]] = lambda node: None) -> bool:
    """Remove taint ``key`` from ``node_name``. True if removed now, False if it was already gone.

    ``check`` sees every node object a patch is computed from; a problem it names raises
    :class:`NotReadyToUntaint` and nothing is patched (even when the taint is already gone)."""
    for attempt in range(1, attempts + 1):
        current = api.get_node(node_name)
        problem = check(current)
        if problem:
            raise NotReadyToUntaint(problem)
        patch = untaint_patch(current, key)
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


def main(env: Optional[dict] = None, api: Optional[Callable[[], Api]] = None,
         statvfs: Callable[[str], os.statvfs_result] = os.statvfs) -> int:
    env = os.environ if env is None else env
    node = env["NODE_NAME"]
    root = Path(env.get("MODEL_PATH", "/model"))
    key = env.get("TAINT_KEY", "kiln.dev/model-warming")
    label = env.get("VERSION_LABEL", DEFAULT_VERSION_LABEL)
    try:
        if not root.is_dir():
            raise NotReadyToUntaint(f"model path {root} is not a directory")
        # Cheap checks first: a wrong or writable model fails in seconds, not after reading 30 GB.
        check_read_only(root, statvfs)
        on_disk = recorded_version(root)
        files, size = read_tree(root)
        if files == 0:
            # An empty directory means the model volume is not mounted: stay tainted.
            raise NotReadyToUntaint(f"no files under {root}")
        print(f"model warm: {files} files, {size / 2**30:.1f} GiB, version {on_disk}")
        # Again at the end: the mount could have changed while the model was read.
        check_read_only(root, statvfs)
        remove_taint((api or Api.in_cluster)(), node, key,
                     check=lambda n: version_problem(n, recorded_version(root), label))
    except NotReadyToUntaint as why:
        message = f"{why}; leaving the {key} taint on node {node}"
        print(message, file=sys.stderr)
        if env.get("TERMINATION_LOG"):   # set by the DaemonSet (infra/warmup.py)
            _termination_message(env["TERMINATION_LOG"], message)
        return 1
    return 0


def _termination_message(path: str, message: str) -> None:
    """The kubelet shows this file's content as the container's exit message (``kubectl describe pod``)."""
    try:
        with open(path, "w") as fh:
            fh.write(message + "\n")
    except OSError:
        pass   # stderr carries it


if __name__ == "__main__":
    sys.exit(main())
