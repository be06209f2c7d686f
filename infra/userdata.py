"""AL2023 node user data: a multi-part MIME document that nodeadm reads.

Part 1 (``application/node.eks.aws``) is the nodeadm ``NodeConfig``: which cluster
to join, the node's labels (model version, node group, the group's own) and the
taints it registers with — always the model-warming taint. Part 2 makes sure the
model volume is mounted read-only where the hostPath PersistentVolume expects it;
cloud-init runs it before nodeadm starts the kubelet.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from typing import Mapping, Optional, Sequence

import yaml

from infra import labels as L
from infra.labels import Taint

BOUNDARY = "KILN-NODE-USER-DATA"
# Kubelet graceful node shutdown. EC2 gives a spot instance two minutes' warning before the
# reclaim; the kubelet's window, opened when the OS starts shutting down, is as long: pods get
# SIGTERM and up to 90 s (their own terminationGracePeriodSeconds, capped), then the critical pods
# (system-cluster-critical/system-node-critical: DNS, the CNI, kiln's termination handler) the
# last 30 s. The kubelet holds systemd's shutdown for this long with an inhibitor lock (and
# raises logind's InhibitDelayMaxSec to fit).
SHUTDOWN_GRACE_SECONDS = 120
SHUTDOWN_GRACE_CRITICAL_PODS_SECONDS = 30


def warming_taint() -> Taint:
    return Taint(L.TAINT_WARMING, L.TAINT_WARMING_VALUE, L.TAINT_WARMING_EFFECT)


def node_labels(model_version: str, group: str, extra: Mapping[str, str],
                accelerator: Optional[str] = None) -> dict[str, str]:
    """kiln's own labels win over a group's (config refuses kiln.dev/ keys anyway).

    ``accelerator``: GPU groups carry ``k8s.amazonaws.com/accelerator``, the label
    cluster-autoscaler's AWS provider knows GPU nodes by (it then waits for the
    device plugin instead of scaling up again for a GPU that is not advertised yet).
    """
    gpu = {L.LABEL_ACCELERATOR: accelerator} if accelerator else {}
    return {**dict(extra), **gpu, L.LABEL_MODEL_VERSION: model_version, L.LABEL_NODE_GROUP: group}


def node_config(*, cluster_name: str, endpoint: str, certificate_authority: str, service_cidr: str,
                labels: Mapping[str, str], taints: Sequence[Taint]) -> dict:
    """The nodeadm ``NodeConfig`` (apiVersion node.eks.aws/v1alpha1) as a dict."""
    flags = ["--node-labels=" + ",".join(f"{k}={v}" for k, v in sorted(labels.items()))]
    return {
        "apiVersion": "node.eks.aws/v1alpha1",
        "kind": "NodeConfig",
        "spec": {
            "cluster": {
                "name": cluster_name,
                "apiServerEndpoint": endpoint,
                "certificateAuthority": certificate_authority,
                "cidr": service_cidr,
            },
            "kubelet": {
                "config": {
                    "shutdownGracePeriod": f"{SHUTDOWN_GRACE_SECONDS}s",
                    "shutdownGracePeriodCriticalPods": f"{SHUTDOWN_GRACE_CRITICAL_PODS_SECONDS}s",
                    "registerWithTaints": [
                        {"key": t.key, "value": t.value, "effect": t.effect} if t.value
                        else {"key": t.key, "effect": t.effect}
                        for t in taints
                    ],
                },
                "flags": flags,
            },
        },
    }


def mount_script(device: str, path: str) -> str:
    """Make sure the AMI's model volume is mounted read-only at ``path``.

    The bake's fstab entry mounts it read-only at boot; AMIs baked before that
    mounted it read-write, so a mount found in place is remounted read-only. If
    the mount a process sees there (the topmost, if mounts are stacked) still is
    not read-only, it is unmounted: the model directory is
    then empty, the warm-up finds no model and the node keeps its warming taint,
    so no Job can write to the model (fail closed). On Nitro instances the EBS
    device appears as NVMe; AL2023's udev rules add the ``/dev/xvdX`` name from
    the block device mapping, which we wait for.
    """
    d, p = shlex.quote(device), shlex.quote(path)
    return "\n".join([
        "#!/bin/bash",
        "set -euo pipefail",
        f"mkdir -p {p}",
        f"if mountpoint -q {p}; then",
        f"  mount -o remount,ro {p} || true",
        "else",
        f"  for _ in $(seq 1 120); do [ -e {d} ] && break; sleep 1; done",
        f"  mount -o ro,noatime {d} {p}",
        "fi",
        # The options of the mount a process sees there: the last one stacked on the path. Not a pipe into
        # `grep -q` (under pipefail its early exit can fail the check), and no findmnt at all reads as "not ro".
        f"top=$(findmnt -n -o OPTIONS --mountpoint {p} | tail -n 1) || top=''",
        'if [[ ",$top," != *,ro,* ]]; then',
        f"  echo \"kiln: the model at {path} is not read-only; unmounting it\" >&2",
        f"  umount {p} || umount -l {p}",
        "  exit 1",
        "fi",
        "",
    ])


def render(*, cluster_name: str, endpoint: str, certificate_authority: str, service_cidr: str,
           model_version: str, group: str, extra_labels: Mapping[str, str], taints: Sequence[Taint],
           model_device: str, model_path: str, accelerator: Optional[str] = None) -> str:
    """The whole user data document (plain text; the launch template base64-encodes it)."""
    config = node_config(
        cluster_name=cluster_name, endpoint=endpoint, certificate_authority=certificate_authority,
        service_cidr=service_cidr, labels=node_labels(model_version, group, extra_labels, accelerator),
        taints=[warming_taint(), *[t for t in taints if t.key != L.TAINT_WARMING]],
    )
    doc = MIMEMultipart(boundary=BOUNDARY)
    node_part = MIMEText(yaml.safe_dump(config, sort_keys=False))
    # MIMEText can only say text/*; nodeadm looks for application/node.eks.aws.
    node_part.replace_header("Content-Type", 'application/node.eks.aws; charset="us-ascii"')
    doc.attach(node_part)
    doc.attach(MIMEText(mount_script(model_device, model_path), "x-shellscript"))
    return doc.as_string()
