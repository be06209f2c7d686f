"""AL2023 nodeadm user data: MIME structure, NodeConfig labels/taints, the model mount."""

from __future__ import annotations

import email

import yaml
from hypothesis import given, settings, strategies as st

from infra import userdata
from infra.labels import Taint as NodeTaint

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
    assert "mount -o remount,ro /opt/models" in script   # an AMI that mounts it itself is made read-only


# ---- the script run, with mount(8) and friends stubbed: what a node ends up with -------------------------

STUBS = {
    # State: $STATE/options holds the mount options while mounted; $STATE/log every call.
    "mountpoint": 'echo "mountpoint $*" >> "$STATE/log"; [ -f "$STATE/options" ]',
    "mount": '''echo "mount $*" >> "$STATE/log"
case "$2" in
  remount,ro) [ -f "$STATE/remount-fails" ] && exit 32; echo ro > "$STATE/options" ;;
  *) [ -e "$3" ] || exit 32; echo "$2" > "$STATE/options" ;;
esac''',
    "findmnt": 'echo "findmnt $*" >> "$STATE/log"; [ -f "$STATE/options" ] && cat "$STATE/options"',
    "umount": 'echo "umount $*" >> "$STATE/log"; rm -f "$STATE/options"',
    "sleep": "true",
}


def run_mount_script(tmp_path, *, mounted=None, remount_fails=False, device_present=True, stubs=None):
    import os
    import subprocess

    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name, body in {**STUBS, **(stubs or {})}.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    device, path = tmp_path / "xvdb", tmp_path / "models"
    if device_present:
        device.write_text("")
    if mounted:
        (state / "options").write_text(mounted + "\n")
    if remount_fails:
        (state / "remount-fails").write_text("")
    script = tmp_path / "mount.sh"
    script.write_text(userdata.mount_script(str(device), str(path)))
    done = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                          env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state)})
    options = (state / "options").read_text().strip() if (state / "options").exists() else None
    return done.returncode, options, (state / "log").read_text().splitlines(), done.stderr


def test_a_fresh_node_mounts_the_model_read_only(tmp_path):
    code, options, log, _ = run_mount_script(tmp_path)
    assert (code, options) == (0, "ro,noatime")
    assert f"mount -o ro,noatime {tmp_path}/xvdb {tmp_path}/models" in log


def test_a_read_write_mount_from_an_older_amis_fstab_is_made_read_only(tmp_path):
    """AMIs baked before issue 12 mount the model read-write from /etc/fstab before user data runs."""
    code, options, log, _ = run_mount_script(tmp_path, mounted="rw,relatime")
    assert (code, options) == (0, "ro")
    assert f"mount -o remount,ro {tmp_path}/models" in log


def test_a_model_that_cannot_be_made_read_only_is_unmounted(tmp_path):
    """Fail closed: the directory is empty, the warm-up finds no model, the node keeps its warming taint."""
    code, options, log, err = run_mount_script(tmp_path, mounted="rw,relatime", remount_fails=True)
    assert code != 0 and options is None
    assert f"umount {tmp_path}/models" in log and "is not read-only" in err


def test_a_read_only_mount_under_a_writable_one_is_not_taken_for_read_only(tmp_path):
    """Stacked mounts: processes see the topmost. A read-only one below it must not pass the check."""
    code, options, log, err = run_mount_script(tmp_path, mounted="ro,noatime\nrw,relatime", remount_fails=True)
    assert code != 0 and options is None
    assert f"umount {tmp_path}/models" in log and "is not read-only" in err


def test_an_already_read_only_model_is_left_mounted(tmp_path):
    code, options, log, _ = run_mount_script(tmp_path, mounted="ro,noatime,attr2,inode64,noquota")
    assert (code, options) == (0, "ro")
    assert not [line for line in log if line.startswith("umount")]


def test_without_findmnt_the_mount_cannot_be_shown_read_only_and_is_unmounted(tmp_path):
    """Fail closed: a check that cannot see the options does not let the model through."""
    code, options, log, err = run_mount_script(tmp_path, stubs={"findmnt": "exit 127"})
    assert code != 0 and options is None and "is not read-only" in err


def test_an_option_that_merely_contains_ro_is_not_read_only(tmp_path):
    code, options, _, _ = run_mount_script(tmp_path, mounted="rw,errors=remount-ro", remount_fails=True)
    assert code != 0 and options is None


def test_no_model_device_means_no_mount_and_a_failed_script(tmp_path):
    code, options, _, _ = run_mount_script(tmp_path, device_present=False)
    assert code != 0 and options is None


@settings(max_examples=30, deadline=None)
@given(value=st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,10}[a-z0-9])?", fullmatch=True))
def test_any_valid_model_version_round_trips(value):
    cfg = yaml.safe_load(parts(userdata.render(model_version=value, group="g", extra_labels={}, taints=[], **COMMON))[0]
                         .get_payload())
    flag = cfg["spec"]["kubelet"]["flags"][0]
    assert f"kiln.dev/model-version={value}," in flag
