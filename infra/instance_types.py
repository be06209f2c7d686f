"""What an EC2 instance type name says: its family, whether it has an NVIDIA GPU, its CPU architecture.

``g5.2xlarge`` is family ``g5``, size ``2xlarge``. Families are read from the name
(AWS's naming: series letters, generation digit, attribute letters), so nothing
here calls EC2. Pure Python: config and the policy pack both use it.
"""

from __future__ import annotations

import re
from typing import Optional

# Families with NVIDIA GPUs that the EKS-optimized AL2023 NVIDIA AMI drives. Older ones (p2's K80,
# g3's M60) are left out: current NVIDIA drivers no longer support them.
NVIDIA_GPU_FAMILIES = frozenset({
    "p3", "p3dn", "p4d", "p4de", "p5", "p5e", "p5en", "p6-b200", "p6-b300", "p6e-gb200",
    "g4dn", "g5", "g5g", "g6", "g6e", "g6f", "gr6", "gr6f",
})
# Accelerators that are not NVIDIA GPUs: AMD GPUs, Inferentia/Trainium, Gaudi, FPGAs, video transcoders.
OTHER_ACCELERATOR_FAMILIES = frozenset({"g4ad", "inf1", "inf2", "trn1", "trn1n", "trn2", "dl1", "dl2q", "f1", "f2", "vt1"})
# Graviton (arm64) families that the attribute rule below does not catch.
ARM_FAMILIES = frozenset({"a1", "p6e-gb200"})

_FAMILY_RE = re.compile(r"^(?P<series>[a-z]+)(?P<generation>[0-9]+)(?P<attributes>[a-z]*)(-[a-z0-9]+)*$")


def family(instance_type: str) -> str:
    """``g5.2xlarge`` -> ``g5``; a string without a size is its own family."""
    return instance_type.split(".", 1)[0]


def has_nvidia_gpu(instance_type: str) -> bool:
    return family(instance_type) in NVIDIA_GPU_FAMILIES


def architecture(instance_type: str) -> Optional[str]:
    """``arm64`` for Graviton families (a ``g`` among the attribute letters: m7g, c7gn, r8gd, ...), else ``x86_64``;
    None when the name does not follow AWS's pattern."""
    fam = family(instance_type)
    if fam in ARM_FAMILIES:
        return "arm64"
    m = _FAMILY_RE.fullmatch(fam)
    if not m:
        return None
    return "arm64" if "g" in m["attributes"] else "x86_64"
