"""AL2023 nodeadm user data: MIME structure, NodeConfig labels/taints, the model mount."""

from __future__ import annotations

import email

import yaml
from hypothesis import given, settings, strategies as st

from infra import userdata
from infra.userdata import NodeTaint

COMMON = dict(cluster_name="kiln-test", endpoint="https://ABC.gr7.us-east-2.eks.amazonaws.com",
              certificate_authority="Q0VSVA==", service_cidr="172.20.0.0/16",
              model_device="/dev/xvdb", model_path="/opt/models")


def parts(text: str):
    doc = email.message_from_string(text)
    assert doc.is_multipart() and doc.get_content_type() == "multipart/mixed"
    return doc.get_payload()


def test_two_parts_nodeadm_config_first():
    p = parts(userdata.render(model_version="v5", group="cpu", extra_labels={}, taints=[], **COMMON))
    assert [x.get_content_type() for x in p] == ["application/node.eks.aws", "text/x-shellscript"]


def test_node_config_joins_the_cluster_with_labels_and_warming_taint():
    p = parts(userdata.render(model_version="v5", group="gpu", extra_labels={"team": "ml"},
                              taints=[NodeTaint("nvidia.com/gpu", "true", "NoSchedule")], **COMMON))
    cfg = yaml.safe_load(p[0].get_payload())
    assert cfg["apiVersion"] == "node.eks.aws/v1alpha1" and cfg["kind"] == "NodeConfig"
    assert cfg["spec"]["cluster"] == {"name": "kiln-test", "apiServerEndpoint": COMMON["endpoint"],
                                      "certificateAuthority": "Q0VSVA==", "cidr": "172.20.0.0/16"}
    assert cfg["spec"]["kubelet"]["flags"] == [
        "--node-labels=kiln.dev/model-version=v5,kiln.dev/node-group=gpu,team=ml"]
    assert cfg["spec"]["kubelet"]["config"]["registerWithTaints"] == [
        {"key": "kiln.dev/model-warming", "value": "true", "effect": "NoSchedule"},
        {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"},
    ]


def test_warming_taint_is_never_duplicated():
    cfg = userdata.node_config(cluster_name="c", endpoint="e", certificate_authority="ca", service_cidr="s",
                               labels={}, taints=[userdata.warming_taint()])
    assert len(cfg["spec"]["kubelet"]["config"]["registerWithTaints"]) == 1
    text = userdata.render(model_version="v5", group="g", extra_labels={},
                           taints=[NodeTaint("kiln.dev/model-warming", "true", "NoSchedule")], **COMMON)
    taints = yaml.safe_load(parts(text)[0].get_payload())["spec"]["kubelet"]["config"]["registerWithTaints"]
    assert [t["key"] for t in taints] == ["kiln.dev/model-warming"]


def test_kiln_labels_win_over_group_labels():
    assert userdata.node_labels("v5", "cpu", {"kiln.dev/model-version": "v1", "a": "b"}) == {
        "a": "b", "kiln.dev/model-version": "v5", "kiln.dev/node-group": "cpu"}


def test_script_mounts_the_model_volume_read_only_at_the_model_path():
    script = parts(userdata.render(model_version="v5", group="cpu", extra_labels={}, taints=[], **COMMON))[1].get_payload()
    assert script.startswith("#!/bin/bash\nset -euo pipefail\n")
    assert "mount -o ro,noatime /dev/xvdb /opt/models" in script
    assert "mountpoint -q /opt/models" in script   # an AMI that mounts it itself is left alone


@settings(max_examples=30, deadline=None)
@given(value=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True))
def test_any_valid_model_version_round_trips(value):
    cfg = yaml.safe_load(parts(userdata.render(model_version=value, group="g", extra_labels={}, taints=[], **COMMON))[0]
                         .get_payload())
    flag = cfg["spec"]["kubelet"]["flags"][0]
    assert f"kiln.dev/model-version={value}," in flag
