"""Host paths: is a path inside the model directory, and is a directory the node's own?

``under`` compares path components, not strings: ``/opt/models-evil`` is not under
``/opt/models``; ``/opt/models/../../etc`` is ``/etc``. A model directory may not
be, contain or sit inside a directory the node itself needs: the model volume is
mounted over it at boot (hiding what was there) and every Job may read it.
Pure Python: config and the policy pack both use it.
"""

from __future__ import annotations

import posixpath
from typing import Optional

# What the OS, containerd, kubelet and the CNI keep on an EKS AL2023 node.
SYSTEM_DIRECTORIES = (
    "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/lost+found", "/media", "/proc",
    "/root", "/run", "/sbin", "/snap", "/sys", "/tmp", "/usr", "/var/cache", "/var/lib", "/var/lock", "/var/log",
    "/var/run", "/var/spool", "/var/tmp", "/opt/aws", "/opt/cni", "/opt/containerd", "/opt/nvidia",
)


def normalise(path: str) -> str:
    """Lexically normalised, with POSIX's implementation-defined leading ``//`` folded to ``/``."""
    norm = posixpath.normpath(path)
    return "/" + norm.lstrip("/") if norm.startswith("/") else norm


def under(path: object, root: str) -> bool:
    """True when ``path`` is ``root`` or inside it, by path components after normalisation."""
    if not isinstance(path, str) or not path.startswith("/"):
        return False
    norm, root = normalise(path), normalise(root)
    return norm == root or norm.startswith(root.rstrip("/") + "/")


def system_directory_problem(path: str) -> Optional[str]:
    """Why ``path`` cannot hold the model, or None. ``path`` must already be absolute."""
    if path == "/":
        return "must not be / (the node's root)"
    if normalise(path) != path or path.endswith("/"):
        return f"must be a normalised absolute path (no '.', '..', '//' or trailing '/'; here {normalise(path)!r})"
    for system in SYSTEM_DIRECTORIES:
        if under(path, system):
            return f"is inside {system}, a system directory the node needs"
        if under(system, path):
            return f"contains {system}, a system directory the node needs (the model volume is mounted over it)"
    return None
