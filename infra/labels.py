"""Kubernetes labels, taints, annotations and AWS tags (and the few other names) that kiln's parts agree on.

The one home of every ``kiln.dev/*`` string and of :class:`Taint`: the program (``infra/``), the
rollout and the termination handler (``automation/``) and the policy pack (``policies/``) all import
them from here. Standard library only: the termination handler's image copies this module
(``images/termination-handler/Dockerfile``) and nothing else of ``infra/``.
"""

import hashlib
import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Taint:
    """A node taint, as a node group declares it and as the rollout reads and writes it."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


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

# The rollout: an old node it drains carries this taint (no new work); a new node it counts on carries
# CA_SCALE_DOWN_DISABLED, and ANNOTATION_ROLLOUT_PROTECTED says kiln put it there (so kiln may take it off).
TAINT_ROLLOUT = "kiln.dev/rollout"
CA_SCALE_DOWN_DISABLED = "cluster-autoscaler.kubernetes.io/scale-down-disabled"
ANNOTATION_ROLLOUT_PROTECTED = "kiln.dev/rollout-protected"
# On a Job or pod: extends the rollout's deadline for its node (seconds).
ANNOTATION_DEADLINE_EXTENSION = "kiln.dev/rollout-deadline-extension-seconds"
# The termination handler: a node whose instance is going away carries this taint (value: the first
# reason, effect NoSchedule) and one annotation per reason (prefix + reason: when the notice arrived).
TAINT_TERMINATING = "kiln.dev/terminating"
ANNOTATION_TERMINATING_PREFIX = "kiln.dev/terminating-"
# The reportingController of the Events each part records (kubectl get events --field-selector
# reportingComponent=... finds them).
REPORTER_ROLLOUT = "kiln.dev/rollout"
REPORTER_TERMINATION_HANDLER = "kiln.dev/termination-handler"

# AWS tags on the ASGs (and their instances): the rollout discovers its groups by them.
TAG_CLUSTER = "kiln.dev/cluster"
TAG_NODE_GROUP = "kiln.dev/node-group"
TAG_AMI_FAMILY = "kiln.dev/ami-family"          # a group's AMI family (standard, gpu); absent means standard
TAG_INTENT_PREFIX = "kiln.dev/rollout-"         # ASG tags holding per-group rollout intent
# ASG tags recording a finished rollback (outcome, not intent): a rerun reports rolled_back until the
# group's launch template version changes to one that is neither of these.
TAG_ROLLED_BACK_FROM = "kiln.dev/rolled-back-from"      # the target version that was rolled back
TAG_ROLLED_BACK_TO = "kiln.dev/rolled-back-to"          # the version restored
TAG_ROLLED_BACK_REASON = "kiln.dev/rolled-back-reason"  # why (truncated to an ASG tag's 256 characters)

# The bake's builder instance (and its volumes) carry TAG_ROLE=BUILDER_ROLE: the rollout role
# (infra/roles.py) lets the bake stop, image, terminate and send commands only to instances so tagged.
TAG_ROLE = "kiln.dev/role"
BUILDER_ROLE = "ami-builder"
# The builder's role (infra/builder.py) writes CloudWatch Logs only to this group and groups below it;
# bake --log-group defaults to it and refuses any other (automation/bake/recipe.py).
BAKE_LOG_GROUP = "/kiln/bake"
# bake --share-with grants each account these operations on the --kms-key (a named KMS grant per account);
# the rollout role may create grants with exactly these operations, nothing wider (infra/roles.py).
BAKE_KEY_GRANT_OPERATIONS = ("Decrypt", "DescribeKey", "CreateGrant", "ReEncryptFrom", "ReEncryptTo",
                             "GenerateDataKeyWithoutPlaintext")

# Jobs: pods owned by these kinds are the ones a node waits for (the rollout's DEFAULT_JOB_OWNER_KINDS,
# automation/rollout/engine.py; tests/test_safe_jobs.py keeps them equal). cluster-autoscaler never scales a
# node down under a pod annotated ANNOTATION_SAFE_TO_EVICT: "false"; the admission policies
# (infra/safe_jobs.py) and the policy pack (policies/rules/safe_to_evict.py) require it on those pods.
JOB_OWNER_KINDS = ("Job", "JAXJob", "MPIJob", "PaddleJob", "PyTorchJob", "TFJob", "Workflow", "XGBoostJob")
ANNOTATION_SAFE_TO_EVICT = "cluster-autoscaler.kubernetes.io/safe-to-evict"

# cluster-autoscaler auto-discovery (--node-group-auto-discovery=asg:tag=...).
CA_TAG_ENABLED = "k8s.io/cluster-autoscaler/enabled"
CA_TAG_CLUSTER_PREFIX = "k8s.io/cluster-autoscaler/"
CA_TAG_NODE_TEMPLATE_LABEL = "k8s.io/cluster-autoscaler/node-template/label/"
CA_TAG_NODE_TEMPLATE_TAINT = "k8s.io/cluster-autoscaler/node-template/taint/"


def ca_cluster_tag(cluster_name: str) -> str:
    """The per-cluster cluster-autoscaler discovery tag key (its value is ``owned``)."""
    return f"{CA_TAG_CLUSTER_PREFIX}{cluster_name}"


# A rotation keeps its intent in one ConfigMap of the cluster it rotates (automation/rotate/state.py); the
# rollout role's RBAC (infra/rollout_access.py) may read and patch exactly that one.
ROTATION_NAMESPACE = "kube-system"
ROTATION_CONFIGMAP_PREFIX = "kiln-rotation-"


def stack_slug(stack: str) -> str:
    """A DNS-1123 name part for a stack, from its short name: ``org/project/prod`` and ``prod`` are both ``prod``.

    A cluster belongs to one stack, and the stack file is ``Pulumi.<short name>.yaml``: however ``--stack`` is
    spelled, the rotation finds the same intent, and the program can name it in RBAC.
    """
    short = stack.rsplit("/", 1)[-1]
    text = re.sub(r"[^a-z0-9.-]+", "-", short.lower()).strip("-.") or "stack"
    if text != short or len(text) > 40:
        text = f"{text[:30].strip('-.')}-{hashlib.sha256(short.encode()).hexdigest()[:8]}"
    return text


def rotation_configmap(stack: str) -> str:
    return ROTATION_CONFIGMAP_PREFIX + stack_slug(stack)
