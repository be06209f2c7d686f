"""The warm-up agent: reads the whole model, then untaints its own node over the Kubernetes API.

The API is kmock's emulator over HTTP (tests/_kube_emulator.py), which also
enforces resourceVersion (409 on a stale write) like a real API server.
"""

from __future__ import annotations

import os

import pytest

from tests._kube_emulator import NODES
from infra import warmup_agent as agent

WARMING = {"key": "kiln.dev/model-warming", "value": "true", "effect": "NoSchedule"}
GPU = {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"}


@pytest.fixture
def kube(kube_server):
    return kube_server


def node(name, *taints):
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kiln.dev/model-version": "v5"}},
            "spec": {"taints": [dict(t) for t in taints]}}


def taints(kube, name):
    return kube.get(NODES, None, name)["spec"].get("taints") or []


def patches(kube):
    return [r for r in kube.requests() if r.method == "PATCH"]


def model_dir(tmp_path, sizes=(0, 1, 3 << 20, 9 << 20), version="v5"):
    """The volume as the bake leaves it: the model under its version directory and the relative ``current`` link."""
    root = tmp_path / "model"
    for i, size in enumerate(sizes):
        path = root / version / f"shard-{i % 2}" / f"part-{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    (root / version).mkdir(parents=True, exist_ok=True)
    (root / "current").symlink_to(version)
    return root


def read_only(path):
    """The real statvfs of ``path`` with ST_RDONLY set: what the agent sees through its readOnly volume mount
    (a real read-only mount needs privileges these tests do not have)."""
    real = os.statvfs(path)
    return os.statvfs_result((real.f_bsize, real.f_frsize, real.f_blocks, real.f_bfree, real.f_bavail, real.f_files,
                              real.f_ffree, real.f_favail, real.f_flag | os.ST_RDONLY, real.f_namemax))


def run_main(kube, name, root, tmp_path, statvfs=read_only):
    log = tmp_path / "termination-log"
    env = {"NODE_NAME": name, "MODEL_PATH": str(root), "TAINT_KEY": "kiln.dev/model-warming",
           "VERSION_LABEL": "kiln.dev/model-version", "TERMINATION_LOG": str(log)}
    code = agent.main(env, api=lambda: agent.Api(kube.url), statvfs=statvfs)
    return code, (log.read_text() if log.exists() else "")


def test_read_tree_reads_every_byte_of_every_file(tmp_path):
    root = model_dir(tmp_path)
    (root / "link").symlink_to(root / "shard-0" / "part-0.bin")
    lines = []
    files, size = agent.read_tree(root, workers=3, log=lines.append)
    assert (files, size) == (4, 1 + (3 << 20) + (9 << 20))
    assert lines and "4/4 files" in lines[-1]


def test_untaint_patch_drops_only_the_key_and_carries_the_version():
    n = node("a", WARMING, GPU)
    n["metadata"]["resourceVersion"] = "17"
    assert agent.untaint_patch(n, "kiln.dev/model-warming") == {
        "metadata": {"resourceVersion": "17"}, "spec": {"taints": [GPU]}}
    assert agent.untaint_patch(node("b", GPU), "kiln.dev/model-warming") is None
    assert agent.untaint_patch({"metadata": {"name": "c"}, "spec": {}}, "kiln.dev/model-warming") is None


def test_removes_the_warming_taint_from_its_own_node_only(kube):
    kube.put(NODES, None, node("ip-10-0-1-1", WARMING, GPU))
    kube.put(NODES, None, node("ip-10-0-1-2", WARMING))
    api = agent.Api(kube.url)
    assert agent.remove_taint(api, "ip-10-0-1-1", "kiln.dev/model-warming", log=lambda _: None) is True
    assert taints(kube, "ip-10-0-1-1") == [GPU]
    assert taints(kube, "ip-10-0-1-2") == [WARMING]


def test_an_untainted_node_is_left_alone(kube):
    kube.put(NODES, None, node("ip-10-0-2-1", GPU))
    kube.clear_requests()
    assert agent.remove_taint(agent.Api(kube.url), "ip-10-0-2-1", "kiln.dev/model-warming", log=lambda _: None) is False
    assert patches(kube) == [] and taints(kube, "ip-10-0-2-1") == [GPU]


def test_a_concurrent_taint_change_is_never_lost(kube):
    """Someone (the rollout) taints the node between our read and our write: we re-read."""
    kube.put(NODES, None, node("ip-10-0-3-1", WARMING))
    rollout = {"key": "kiln.dev/rollout", "value": "draining", "effect": "NoSchedule"}

    class RacingApi(agent.Api):
        raced = False

        def get_node(self, name):
            seen = super().get_node(name)
            if not self.raced:
                self.raced = True
                kube.put(NODES, None, node(name, WARMING, rollout))   # new resourceVersion
            return seen

    kube.clear_requests()
    logs = []
    assert agent.remove_taint(RacingApi(kube.url), "ip-10-0-3-1", "kiln.dev/model-warming", log=logs.append) is True
    assert taints(kube, "ip-10-0-3-1") == [rollout]
    assert len(patches(kube)) == 2 and any("re-reading" in line for line in logs)


def test_main_warms_then_untaints(kube, tmp_path, capsys):
    kube.put(NODES, None, node("ip-10-0-4-1", WARMING))
    code, why = run_main(kube, "ip-10-0-4-1", model_dir(tmp_path), tmp_path)
    assert (code, why) == (0, "")
    assert taints(kube, "ip-10-0-4-1") == []
    out = capsys.readouterr().out
    assert "model warm: 4 files" in out and "version v5" in out


def test_main_keeps_the_taint_when_the_model_is_missing(kube, tmp_path):
    """An empty mount point means the model volume did not mount: no Job may land here."""
    kube.put(NODES, None, node("ip-10-0-5-1", WARMING))
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "absent"):
        assert run_main(kube, "ip-10-0-5-1", path, tmp_path)[0] == 1
    assert taints(kube, "ip-10-0-5-1") == [WARMING]


def test_a_writable_model_mount_keeps_the_taint_and_says_why(kube, tmp_path, capsys):
    """The real statvfs of a writable directory: a Job could change the model there, so no Job may land."""
    kube.put(NODES, None, node("ip-10-0-6-1", WARMING))
    root = model_dir(tmp_path)
    kube.clear_requests()
    code, why = run_main(kube, "ip-10-0-6-1", root, tmp_path, statvfs=os.statvfs)
    assert code == 1 and taints(kube, "ip-10-0-6-1") == [WARMING] and patches(kube) == []
    assert "mounted read-write" in why and str(root) in why and "ip-10-0-6-1" in why
    assert why.strip() in capsys.readouterr().err


def test_a_mount_that_turns_writable_while_the_model_is_read_keeps_the_taint(kube, tmp_path):
    kube.put(NODES, None, node("ip-10-0-6-2", WARMING))
    calls = []

    def read_only_once(path):
        calls.append(path)
        return read_only(path) if len(calls) == 1 else os.statvfs(path)

    code, why = run_main(kube, "ip-10-0-6-2", model_dir(tmp_path), tmp_path, statvfs=read_only_once)
    assert code == 1 and "read-write" in why and len(calls) == 2
    assert taints(kube, "ip-10-0-6-2") == [WARMING]


def test_a_mount_whose_flags_cannot_be_read_counts_as_writable(kube, tmp_path):
    kube.put(NODES, None, node("ip-10-0-6-3", WARMING))

    def unreadable(path):
        raise PermissionError(13, "Permission denied", path)

    code, why = run_main(kube, "ip-10-0-6-3", model_dir(tmp_path), tmp_path, statvfs=unreadable)
    assert code == 1 and "cannot tell whether" in why and taints(kube, "ip-10-0-6-3") == [WARMING]


def labelled(name, version, *taints):
    n = node(name, *taints)
    if version is None:
        del n["metadata"]["labels"]["kiln.dev/model-version"]
    else:
        n["metadata"]["labels"]["kiln.dev/model-version"] = version
    return n


@pytest.mark.parametrize("label, expected", [
    ("v6", "model on disk is v5 but the node's kiln.dev/model-version label says v6"),
    ("v5 ", "label says v5 "),           # no normalising: the label must name the directory exactly
    ("", "node has no kiln.dev/model-version label"),
    (None, "node has no kiln.dev/model-version label"),
])
def test_a_model_version_other_than_the_node_label_keeps_the_taint(kube, tmp_path, label, expected):
    """A node booted from an AMI baked with another model (a launch template pointing at the wrong AMI, a
    label typo): Jobs asking for the label's version would read another model. A missing label cannot be
    checked, so it fails too."""
    name = f"ip-10-0-7-{len(label or 'x')}"
    kube.put(NODES, None, labelled(name, label, WARMING))
    kube.clear_requests()
    code, why = run_main(kube, name, model_dir(tmp_path), tmp_path)
    assert code == 1 and expected in why and taints(kube, name) == [WARMING] and patches(kube) == []


def test_a_model_version_that_cannot_be_read_keeps_the_taint(kube, tmp_path):
    """No ``current`` link, or one that names nothing under the model path: unreadable counts as a mismatch."""
    kube.put(NODES, None, node("ip-10-0-8-1", WARMING))
    root = model_dir(tmp_path)
    (root / "current").unlink()
    code, why = run_main(kube, "ip-10-0-8-1", root, tmp_path)
    assert code == 1 and "cannot read the model version" in why
    for target in ("v9", "..", ".", ""):      # v9 does not exist; the others name no version
        if (root / "current").is_symlink():
            (root / "current").unlink()
        (root / "current").symlink_to(target or "/")
        code, why = run_main(kube, "ip-10-0-8-1", root, tmp_path)
        assert code == 1 and "is not a version directory" in why, target
    assert taints(kube, "ip-10-0-8-1") == [WARMING]


def test_an_absolute_current_link_from_an_older_bake_names_its_version(tmp_path):
    """AMIs baked before issue 12 carry ``current -> /opt/models/v5``: in the pod it does not resolve, but it
    names the version, and that directory is there."""
    root = model_dir(tmp_path)
    (root / "current").unlink()
    (root / "current").symlink_to("/opt/models/v5")
    assert agent.recorded_version(root) == "v5"
    (root / "current").unlink()
    (root / "current").symlink_to("/opt/models/v4")
    with pytest.raises(agent.NotReadyToUntaint, match="not a version directory"):
        agent.recorded_version(root)


def test_a_label_changed_while_the_patch_was_computed_is_checked_again(kube, tmp_path):
    """The version is checked on the very node object the untaint patch comes from: a label that changes
    between the read and the write makes the patch stale (409), and the re-read node is checked again."""
    kube.put(NODES, None, node("ip-10-0-9-1", WARMING))
    root = model_dir(tmp_path)

    class RelabellingApi(agent.Api):
        def get_node(self, name):
            seen = super().get_node(name)
            if seen["metadata"]["labels"]["kiln.dev/model-version"] == "v5":
                kube.put(NODES, None, labelled(name, "v6", WARMING))
            return seen

    with pytest.raises(agent.NotReadyToUntaint, match="label says v6"):
        agent.remove_taint(RelabellingApi(kube.url), "ip-10-0-9-1", "kiln.dev/model-warming", log=lambda _: None,
                           check=lambda n: agent.version_problem(n, agent.recorded_version(root)))
    assert taints(kube, "ip-10-0-9-1") == [WARMING]


def test_an_already_warm_node_with_the_wrong_model_still_fails(kube, tmp_path):
    """The DaemonSet re-runs the agent on nodes it untainted long ago (a new agent rolls it): the taint is
    gone, but a wrong model is still reported, not passed as "nothing to do"."""
    kube.put(NODES, None, labelled("ip-10-0-9-2", "v6"))
    code, why = run_main(kube, "ip-10-0-9-2", model_dir(tmp_path), tmp_path)
    assert code == 1 and "label says v6" in why
