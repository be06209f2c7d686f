"""The Kubernetes rules, the safe-to-evict rule and the launch-template rule, each decision with its exact messages.

Written against the survivors of a mutmut run on ``policies/rules/kubernetes.py``, ``safe_to_evict.py`` and
``launch_templates.py`` (issue 15): every test states what a rule reports for one crafted resource — called as
the SDK calls it (tests/_policy_helpers.py) — and pins the exact violation messages an operator reads. Equivalent
mutants (no input tells them apart) are listed with a reason in tests/mutation/equivalent.txt.
"""

from __future__ import annotations

import pytest
from pulumi_policy.proxy import UnknownValueError

from _policy_helpers import UNKNOWN, resource, stack_violations, violations

# --------------------------------------------------------------------------- launch templates: model volume init rate

LT = "aws:ec2/launchTemplate:LaunchTemplate"
INIT_RATE = "lt-model-volume-init-rate"


def rate_message(device="/dev/xvdb"):
    return (f"model volume {device} needs ebs.volumeInitializationRate between 100 and 300 MiB/s "
            "(a volume restored from a snapshot otherwise reads cold at ~9 MB/s)")


def lt(*mappings):
    return {"blockDeviceMappings": [{"deviceName": "/dev/xvda", "ebs": {"volumeSize": 100}}, *mappings]}


def model_volume(rate, device="/dev/xvdb"):
    return {"deviceName": device, "ebs": {"encrypted": "true", **({} if rate is None else {
        "volumeInitializationRate": rate})}}


@pytest.mark.parametrize("rate", [100, 100.0, 200, 300, "150"])
def test_init_rate_within_100_to_300_passes(rate):
    assert violations(INIT_RATE, LT, lt(model_volume(rate))) == []


@pytest.mark.parametrize("rate", [None, 99, 99.9, 300.5, 301, 0, -200, "fast", True])
def test_init_rate_missing_outside_or_not_a_number_is_reported_once(rate):
    assert violations(INIT_RATE, LT, lt(model_volume(rate))) == [rate_message()]


def test_init_rate_without_ebs_block_is_reported():
    assert violations(INIT_RATE, LT, lt({"deviceName": "/dev/xvdb"})) == [rate_message()]


def test_no_model_volume_mapping_is_reported_with_the_device():
    assert violations(INIT_RATE, LT, lt()) == ["no block device mapping for the model volume /dev/xvdb"]
    assert violations(INIT_RATE, LT, {}) == ["no block device mapping for the model volume /dev/xvdb"]
    assert violations(INIT_RATE, LT, lt(model_volume(200, device="/dev/xvdc"))) == [
        "no block device mapping for the model volume /dev/xvdb"]


def test_only_the_first_mapping_of_the_model_device_is_judged():
    assert violations(INIT_RATE, LT, lt(model_volume(200), model_volume(None))) == []
    assert violations(INIT_RATE, LT, lt(model_volume(None), model_volume(200))) == [rate_message()]


def test_configured_model_volume_device_is_the_one_judged():
    cfg = {"modelVolumeDevice": "/dev/xvdc"}
    assert violations(INIT_RATE, LT, lt(model_volume(200, device="/dev/xvdc")), config=cfg) == []
    assert violations(INIT_RATE, LT, lt(model_volume(50, device="/dev/xvdc")), config=cfg) == [
        rate_message("/dev/xvdc")]
    assert violations(INIT_RATE, LT, lt(model_volume(200)), config=cfg) == [
        "no block device mapping for the model volume /dev/xvdc"]


def test_unset_device_config_falls_back_to_the_kiln_default():
    assert violations(INIT_RATE, LT, lt(model_volume(200)), config={"modelVolumeDevice": None}) == []
    assert violations(INIT_RATE, LT, lt(), config={"modelVolumeDevice": None}) == [
        "no block device mapping for the model volume /dev/xvdb"]


@pytest.mark.parametrize("type_", ["aws:ec2/instance:Instance", "aws:ec2/launchTemplate:LaunchTemplatePatch",
                                   "kubernetes:core/v1:Pod"])
def test_init_rate_judges_only_launch_templates(type_):
    assert violations(INIT_RATE, type_, lt()) == []
