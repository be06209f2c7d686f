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


def model_dir(tmp_path, sizes=(0, 1, 3 << 20, 9 << 20)):
    root = tmp_path / "model"
    for i, size in enumerate(sizes):
        path = root / f"shard-{i % 2}" / f"part-{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
    return root


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
    env = {"NODE_NAME": "ip-10-0-4-1", "MODEL_PATH": str(model_dir(tmp_path)), "TAINT_KEY": "kiln.dev/model-warming"}
    assert agent.main(env, api=lambda: agent.Api(kube.url)) == 0
    assert taints(kube, "ip-10-0-4-1") == []
    assert "model warm: 4 files" in capsys.readouterr().out


def test_main_keeps_the_taint_when_the_model_is_missing(kube, tmp_path):
    """An empty mount point means the model volume did not mount: no Job may land here."""
    kube.put(NODES, None, node("ip-10-0-5-1", WARMING))
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "absent"):
        env = {"NODE_NAME": "ip-10-0-5-1", "MODEL_PATH": str(path)}
        assert agent.main(env, api=lambda: agent.Api(kube.url)) == 1
    assert taints(kube, "ip-10-0-5-1") == [WARMING]
