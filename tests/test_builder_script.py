"""The bake's builder script: what it leaves in the AMI for the nodes (read-only fstab entry, relative symlink).

The script runs under bash with the block-device tools stubbed on PATH (no root,
no disks here); the fstab it edits is a file of the test (``KILN_FSTAB``).
"""

from __future__ import annotations

import os
import subprocess

from automation.bake.recipe import builder_script

STUBS = {
    "blkid": 'echo "blkid $*" >> "$STATE/log"; exit 0',          # the volume already has a filesystem
    "mkfs.xfs": 'echo "mkfs.xfs $*" >> "$STATE/log"',
    "mountpoint": 'echo "mountpoint $*" >> "$STATE/log"; exit 1',  # not mounted yet
    "mount": 'echo "mount $*" >> "$STATE/log"',
}


def builder(step: str, tmp_path, **env) -> subprocess.CompletedProcess:
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir(exist_ok=True)
    state.mkdir(exist_ok=True)
    for name, body in STUBS.items():
        (bin_dir / name).write_text("#!/bin/bash\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "xvdb").touch()
    script = tmp_path / "builder.sh"
    script.write_text(builder_script())
    base = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state),
            "KILN_MODEL_PATH": str(tmp_path / "models"), "KILN_MODEL_VERSION": "v6", "KILN_MODEL_URI": "s3://m/v6/",
            "KILN_MODEL_DEVICE": str(tmp_path / "xvdb"), "KILN_IMAGES": "", "KILN_REGION": "us-east-2",
            "KILN_ETC_DIR": str(tmp_path / "etc"), "KILN_FSTAB": str(tmp_path / "fstab")}
    return subprocess.run(["bash", str(script), step], env={**base, **env}, capture_output=True, text=True, timeout=30)


def kiln_entries(tmp_path) -> list[list[str]]:
    return [line.split() for line in (tmp_path / "fstab").read_text().splitlines() if line.startswith("LABEL=kiln-model")]


def test_the_baked_fstab_mounts_the_model_read_only(tmp_path):
    """systemd mounts fstab entries before user data runs: a read-write entry would leave the model writable."""
    (tmp_path / "fstab").write_text("UUID=1234 / xfs defaults,noatime 1 1\n")
    done = builder("mount-volume", tmp_path)
    assert done.returncode == 0, done.stderr
    [entry] = kiln_entries(tmp_path)
    assert entry[:3] == ["LABEL=kiln-model", str(tmp_path / "models"), "xfs"]
    options = entry[3].split(",")
    assert "ro" in options and "nofail" in options and "rw" not in options and "defaults" not in options
    assert (tmp_path / "fstab").read_text().startswith("UUID=1234 / xfs defaults,noatime 1 1\n")   # the rest stays
    # The builder itself still mounts it read-write to copy the model in.
    assert f"mount {tmp_path}/xvdb {tmp_path}/models" in (tmp_path / "state" / "log").read_text()


def test_a_read_write_entry_from_the_base_ami_is_replaced_not_kept(tmp_path):
    """Baking on top of an AMI baked before issue 12: its rw entry must not survive."""
    (tmp_path / "fstab").write_text(f"LABEL=kiln-model {tmp_path}/models xfs defaults,nofail 0 2\n")
    assert builder("mount-volume", tmp_path).returncode == 0
    [entry] = kiln_entries(tmp_path)
    assert entry[3].split(",")[0] == "ro"
    assert builder("mount-volume", tmp_path).returncode == 0        # a retried step adds no second entry
    assert len(kiln_entries(tmp_path)) == 1


def test_current_is_a_relative_link_that_resolves_wherever_the_volume_is_mounted(tmp_path):
    (tmp_path / "models" / "v6").mkdir(parents=True)
    (tmp_path / "models" / "v6" / "config.json").write_text("{}")
    assert builder("record", tmp_path).returncode == 0
    assert os.readlink(tmp_path / "models" / "current") == "v6"
    # A Job mounts the model directory somewhere else (its hostPath volume at /model): the link still resolves.
    (tmp_path / "models").rename(tmp_path / "model-in-a-container")
    assert (tmp_path / "model-in-a-container" / "current" / "config.json").read_text() == "{}"
