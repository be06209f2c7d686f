"""The bake's builder script: what it leaves in the AMI for the nodes (read-only fstab entry, relative symlink).

The script runs under bash with the block-device tools stubbed on PATH (no root,
no disks here); the fstab it edits is a file of the test (``KILN_FSTAB``).
"""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess

import pytest

from automation.bake.recipe import builder_script

STUBS = {
    "blkid": 'echo "blkid $*" >> "$STATE/log"; exit 0',          # the volume already has a filesystem
    "mkfs.xfs": 'echo "mkfs.xfs $*" >> "$STATE/log"',
    "mountpoint": 'echo "mountpoint $*" >> "$STATE/log"; exit 1',  # not mounted yet
    "mount": 'echo "mount $*" >> "$STATE/log"',
    # `aws s3 sync ... SRC/ DEST/`: copies the test's model source ($SOURCE) into DEST as the sync would.
    "aws": 'echo "aws $*" >> "$STATE/log"; cp -a "$SOURCE/." "${@: -1}"',
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


# ---- a model source with links out of it or special files is refused, naming the path ----------------------


def model_source(tmp_path):
    """A model as the bucket holds it, with a relative link that stays inside (Hugging Face caches use them)."""
    source = tmp_path / "source"
    (source / "blobs").mkdir(parents=True)
    (source / "snapshots").mkdir()
    files = {"blobs/abc": b"w" * 4096, "config.json": b"{}"}
    for name, data in files.items():
        (source / name).write_bytes(data)
    (source / "snapshots" / "model.bin").symlink_to("../blobs/abc")
    (source / "MANIFEST.sha256").write_text("".join(f"{hashlib.sha256(d).hexdigest()}  {n}\n" for n, d in files.items()))
    return source


def copy(tmp_path, source):
    return builder("copy-model", tmp_path, SOURCE=str(source))


def test_a_model_with_links_only_inside_it_is_copied_and_verified(tmp_path):
    source = model_source(tmp_path)
    done = copy(tmp_path, source)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "models" / "v6" / "snapshots" / "model.bin").read_bytes() == b"w" * 4096
    verified = builder("verify-model", tmp_path)
    assert verified.returncode == 0 and "model verified" in verified.stdout


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))


def _device(path):
    try:
        os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))   # a character device, as /dev/null is
    except PermissionError:
        pytest.skip("creating a device file needs CAP_MKNOD (the fifo and socket cases run the same check)")


@pytest.mark.parametrize("relative, make, says", [
    ("etc-passwd", lambda p: p.symlink_to("/etc/passwd"), "is a symlink to the absolute path /etc/passwd"),
    ("blobs/up", lambda p: p.symlink_to("../../outside"), "is a symlink to ../../outside, which leads outside"),
    ("blobs/sibling", lambda p: p.symlink_to("../../v5/weights.bin"),
     "is a symlink to ../../v5/weights.bin, which leads outside"),   # another version
    ("blobs/dir", lambda p: p.symlink_to("../.."), "is a symlink to ../.., which leads outside"),
    # A link that stays inside but through another link that leaves:
    ("hop", lambda p: (p.parent / "blobs" / "out").symlink_to("/etc") or p.symlink_to("blobs/out/passwd"),
     "is a symlink to blobs/out/passwd, which leads outside"),
    ("pipe", _fifo, "is a fifo, not a regular file"),
    ("sock", _socket, "is a socket, not a regular file"),
    ("null", _device, "is a character special file, not a regular file"),
])
def test_a_model_source_with_a_link_out_of_it_or_a_special_file_is_refused_naming_it(tmp_path, relative, make, says):
    """Such a model would bake a view of the builder's own disk (or a device) into every node, and the checksum
    step would read through it: the copy step fails, naming the path, and the bake never images the builder."""
    source = model_source(tmp_path)
    make(source / relative)
    done = copy(tmp_path, source)
    dest = tmp_path / "models" / "v6"
    assert done.returncode != 0
    assert f"refusing the model: {dest}/{relative} {says}" in done.stderr, done.stderr
    # verify-model refuses the same tree too (a retried or reordered step cannot read through it).
    verified = builder("verify-model", tmp_path)
    assert verified.returncode != 0 and f"{dest}/{relative}" in verified.stderr and "model verified" not in verified.stdout


def test_every_offending_path_is_named_and_what_was_there_before_the_copy_counts(tmp_path):
    source = model_source(tmp_path)
    (source / "a").symlink_to("/")
    os.mkfifo(source / "b")
    done = copy(tmp_path, source)
    assert done.returncode != 0 and "/v6/a is a symlink" in done.stderr and "/v6/b is a fifo" in done.stderr
    # Already on the volume before the sync (a model volume a base AMI brought): refused before copying.
    (tmp_path / "state" / "log").write_text("")
    clean = tmp_path / "clean"
    clean.mkdir()
    again = copy(tmp_path, clean)
    assert again.returncode != 0 and "/v6/a is a symlink" in again.stderr
    assert "aws s3 sync" not in (tmp_path / "state" / "log").read_text()


def test_a_model_directory_that_is_itself_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "v6").symlink_to(tmp_path / "elsewhere")
    done = copy(tmp_path, model_source(tmp_path))
    assert done.returncode != 0 and "v6 is itself a symlink" in done.stderr
    assert list((tmp_path / "elsewhere").iterdir()) == []
