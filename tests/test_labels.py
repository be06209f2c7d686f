"""The program, the rollout, the termination handler and the policy pack find nodes and ASGs by the same strings:
each ``kiln.dev/*`` string is defined once, in infra/labels.py."""

import re
from pathlib import Path

from infra import labels

ROOT = Path(__file__).resolve().parent.parent


def test_label_taint_and_tag_strings():
    pairs = {
        "LABEL_MODEL_VERSION": "kiln.dev/model-version",
        "LABEL_NODE_GROUP": "kiln.dev/node-group",
        "TAINT_WARMING": "kiln.dev/model-warming",
        "TAINT_ROLLOUT": "kiln.dev/rollout",
        "TAINT_TERMINATING": "kiln.dev/terminating",
        "TAG_CLUSTER": "kiln.dev/cluster",
        "TAG_NODE_GROUP": "kiln.dev/node-group",
    }
    for name, value in pairs.items():
        assert getattr(labels, name) == value, name


def test_the_shared_kiln_strings_are_defined_only_in_infra_labels():
    """Outside infra/labels.py no module spells a string labels.py defines (the warm-up agent excepted: it runs
    alone on the node, from a ConfigMap, and receives its label and taint through its environment)."""
    shared = {v for k, v in vars(labels).items() if k.isupper() and isinstance(v, str) and v.startswith("kiln.dev/")}
    assert len(shared) >= 12
    spelled = {}
    for path in [*ROOT.glob("automation/**/*.py"), *ROOT.glob("infra/*.py"), *ROOT.glob("policies/**/*.py"),
                 ROOT / "__main__.py"]:
        if path.name in ("labels.py", "warmup_agent.py"):
            continue
        for literal in re.findall(r"""["']((?:kiln\.dev/)[\w./-]*)["']""", path.read_text()):
            if literal in shared:
                spelled.setdefault(literal, []).append(str(path.relative_to(ROOT)))
    assert not spelled, spelled


def test_cluster_autoscaler_tag_for_a_cluster():
    assert labels.ca_cluster_tag("kiln-prod") == "k8s.io/cluster-autoscaler/kiln-prod"
