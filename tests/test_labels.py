"""The program and the rollout find nodes and ASGs by the same strings."""

from automation.rollout import model
from infra import labels


def test_label_taint_and_tag_strings_agree_with_the_rollout():
    pairs = {
        "LABEL_MODEL_VERSION": "kiln.dev/model-version",
        "LABEL_NODE_GROUP": "kiln.dev/node-group",
        "TAINT_WARMING": "kiln.dev/model-warming",
        "TAG_CLUSTER": "kiln.dev/cluster",
        "TAG_NODE_GROUP": "kiln.dev/node-group",
    }
    for name, value in pairs.items():
        assert getattr(labels, name) == getattr(model, name) == value, name


def test_cluster_autoscaler_tag_for_a_cluster():
    assert labels.ca_cluster_tag("kiln-prod") == "k8s.io/cluster-autoscaler/kiln-prod"
