"""`bake --prefetch-image` follows kiln:prefetchImages' rule, and the builder pulls exactly the references it gets."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from automation.bake.recipe import BakeInputError, BakeRequest, builder_script
from infra.config import ConfigError, parse
from policies.program import PROJECT_DIR

ECR = "123456789012.dkr.ecr.us-east-2.amazonaws.com"
DIGEST = "sha256:" + "ab" * 32
STACK = {"clusterName": "kiln", "kubernetesVersion": "1.33", "availabilityZones": ["us-east-2a", "us-east-2b"],
         "nodeAmi": "ami-0123456789abcdef0", "modelVersion": "v5",
         "nodeGroups": [{"name": "cpu", "instanceTypes": ["m7i.large"], "minSize": 0, "maxSize": 1, "desiredSize": 1}]}
REFERENCES = [
    (f"{ECR}/trainer:1.4", True), (f"{ECR}/trainer@{DIGEST}", True), (f"{ECR}/ml/trainer:1.4@{DIGEST}", True),
    ("public.ecr.aws/docker/library/python:3.12-slim", True), ("localhost:5000/x:1", True),
    (f"{ECR}/trainer:latest", False), (f"{ECR}/trainer:Latest", False), ("docker.io/library/python", False),
    ("library/python:3.12", False), ("python:3.12", False), (f"{ECR}/*:1", False), (f"{ECR}/trainer:1.4 ", False),
    (f"{ECR}/trainer:1.4;reboot", False), (f"{ECR}/Trainer:1.4", False), (f"{ECR}/trainer:-x", False),
    (f"{ECR}/trainer@sha256:abc", False), ("", False), (f"{ECR}/trainer:tāg", False), (f"{ECR}//trainer:1", False),
]


def request(*images: str) -> BakeRequest:
    return BakeRequest(model_version="v6", model_uri="s3://models/v6/", subnet_id="subnet-0aaaaaaaaaaaaaaaa",
                       instance_profile="kiln-nodes", prefetch_images=images)


@pytest.mark.parametrize("reference, pinned", REFERENCES, ids=[r or "empty" for r, _ in REFERENCES])
def test_one_rule_for_the_stack_and_the_bake(reference, pinned):
    """The same verdict from kiln:prefetchImages and from `bake --prefetch-image`."""
    try:
        parse({**STACK, "prefetchImages": [reference]})
        stack_ok = True
    except ConfigError as exc:
        assert all(p.startswith("kiln:prefetchImages[0] ") for p in exc.problems), exc.problems
        stack_ok = False
    try:
        request(reference)
        bake_ok = True
    except BakeInputError as exc:
        assert str(exc).startswith("--prefetch-image ("), exc
        bake_ok = False
    assert stack_ok is bake_ok is pinned


def test_bake_refuses_an_unpinned_image_before_touching_aws():
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x",
           "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-2", "COLUMNS": "400"}
    result = subprocess.run(
        [sys.executable, "-m", "automation", "bake", "--model-version", "v6", "--model-uri", "s3://models/v6/",
         "--subnet-id", "subnet-0aaaaaaaaaaaaaaaa", "--instance-profile", "kiln-nodes",
         "--prefetch-image", f"{ECR}/trainer:1.4", "--prefetch-image", "docker.io/library/python:latest"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    err = " ".join(result.stderr.split())
    assert "--prefetch-image ('docker.io/library/python:latest') is pinned to 'latest'" in err
    assert "trainer:1.4" not in err


def test_builder_pulls_each_reference_literally_never_a_glob_expansion(tmp_path):
    """A reference with shell pattern characters reaches ctr as written, not as the files it happens to match."""
    bin_dir, work = tmp_path / "bin", tmp_path / "work"
    bin_dir.mkdir()
    (work / "registry.example.com" / "x").mkdir(parents=True)
    (work / "registry.example.com" / "x" / "secret").write_text("")
    log = tmp_path / "ctr.log"
    for name, body in {"systemctl": "exit 0", "aws": "echo token",
                       "ctr": f'printf "%s\\n" "$*" >> {log}'}.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    script = tmp_path / "builder.sh"
    script.write_text(builder_script())
    images = "public.ecr.aws/a/b:1   registry.example.com/x/*\tregistry.example.com/x/?ecret"
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "KILN_IMAGES": images, "KILN_REGION": "us-east-2",
           "KILN_MODEL_PATH": str(tmp_path / "m"), "KILN_MODEL_VERSION": "v6", "KILN_MODEL_URI": "s3://m/v6/",
           "KILN_MODEL_DEVICE": "/dev/xvdb"}
    done = subprocess.run(["bash", str(script), "prefetch"], cwd=work, env=env, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    pulled = [line.split()[-1] for line in log.read_text().splitlines()]
    assert pulled == ["public.ecr.aws/a/b:1", "registry.example.com/x/*", "registry.example.com/x/?ecret"]
    assert "prefetched 3 image(s)" in done.stdout
