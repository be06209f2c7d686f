"""Kubernetes labels, taints and AWS tags that kiln's parts agree on.

The rollout (``automation/rollout/model.py``) finds nodes and ASGs by these very
strings, so they are a contract: ``tests/test_labels.py`` keeps both copies equal.
"""

# Node labels (set by nodeadm from the launch template's user data).
LABEL_MODEL_VERSION = "kiln.dev/model-version"
LABEL_NODE_GROUP = "kiln.dev/node-group"
# On GPU nodes: the label cluster-autoscaler's AWS provider recognises GPU nodes (and node templates) by.
LABEL_ACCELERATOR = "k8s.amazonaws.com/accelerator"

# A node registers with this taint; the warm-up DaemonSet removes it once the
# model has been read end to end, so model Jobs only land on warm nodes.
TAINT_WARMING = "kiln.dev/model-warming"
TAINT_WARMING_VALUE = "true"
TAINT_WARMING_EFFECT = "NoSchedule"

# AWS tags on the ASGs (and their instances): the rollout discovers its groups by them.
TAG_CLUSTER = "kiln.dev/cluster"
TAG_NODE_GROUP = "kiln.dev/node-group"

# The bake's builder instance (and its volumes) carry TAG_ROLE=BUILDER_ROLE: the rollout role
# (infra/roles.py) lets the bake stop, image, terminate and send commands only to instances so tagged.
TAG_ROLE = "kiln.dev/role"
BUILDER_ROLE = "ami-builder"

# cluster-autoscaler auto-discovery (--node-group-auto-discovery=asg:tag=...).
CA_TAG_ENABLED = "k8s.io/cluster-autoscaler/enabled"
CA_TAG_CLUSTER_PREFIX = "k8s.io/cluster-autoscaler/"
CA_TAG_NODE_TEMPLATE_LABEL = "k8s.io/cluster-autoscaler/node-template/label/"
CA_TAG_NODE_TEMPLATE_TAINT = "k8s.io/cluster-autoscaler/node-template/taint/"


def ca_cluster_tag(cluster_name: str) -> str:
    """The per-cluster cluster-autoscaler discovery tag key (its value is ``owned``)."""
    return f"{CA_TAG_CLUSTER_PREFIX}{cluster_name}"
