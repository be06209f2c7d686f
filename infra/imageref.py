"""Image references a node may pull: full (with a registry), and pinned by a tag or a digest, never ``latest``.

Some images must be pinned by digest alone (``by_digest``): the termination
handler's (``kiln:terminationHandlerImage``) runs with permissions to hold and
release every node, so a tag someone can push again is not enough.

The grammar is the OCI distribution reference's (github.com/distribution/reference,
``reference.go``), ASCII only; kiln additionally wants the registry host spelled
out (containerd's ``ctr`` does not default to Docker Hub) and a pin. One rule for
``kiln:prefetchImages`` and ``automation bake --prefetch-image``.
"""

from __future__ import annotations

import re
from typing import Optional

EXAMPLE = "123456789012.dkr.ecr.us-east-2.amazonaws.com/trainer:1.4"
DIGEST_EXAMPLE = "123456789012.dkr.ecr.us-east-2.amazonaws.com/kiln-termination-handler@sha256:<64 hex digits>"
FLOATING_TAGS = ("latest",)

_HOST_COMPONENT = r"(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
_HOST = re.compile(rf"^(?:{_HOST_COMPONENT}(?:\.{_HOST_COMPONENT})+|localhost)(?::[0-9]{{1,5}})?$|^{_HOST_COMPONENT}:[0-9]{{1,5}}$")
_PATH = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def image_reference_problem(ref: object, *, by_digest: bool = False) -> Optional[str]:
    """Why ``ref`` is not a full, pinned image reference (with ``by_digest``: pinned by a digest), or None."""
    if not isinstance(ref, str) or not ref:
        return f"({ref!r}) must be a non-empty string"
    name_tag, at, digest = ref.partition("@")
    if at and not _DIGEST.fullmatch(digest):
        return f"({ref!r}) has an invalid digest (sha256: and 64 lower-case hex digits)"
    host, slash, rest = name_tag.partition("/")
    if not slash or not _HOST.fullmatch(host):
        return (f"({ref!r}) must be a full image reference starting with a registry host (a name with a dot or a "
                f"port, or localhost), such as {EXAMPLE}")
    path, colon, tag = rest.rpartition(":") if ":" in rest else (rest, "", "")
    if not _PATH.fullmatch(path) or len(name_tag) - len(colon + tag) > 255:
        return f"({ref!r}) has an invalid repository path {path!r} (lower-case letters, digits, '.', '_', '-', '/')"
    if colon and not _TAG.fullmatch(tag):
        return (f"({ref!r}) has an invalid tag {tag!r}: pin the image by a tag or a digest (a tag is up to 128 "
                "ASCII letters, digits, '_', '.', '-')")
    if by_digest and not at:
        return (f"({ref!r}) must be pinned by digest, such as {DIGEST_EXAMPLE} (a tag can be pushed again; "
                "the CI templates print the digest they pushed)")
    if not colon and not at:
        return f"({ref!r}) must be pinned by a tag or a digest, e.g. {EXAMPLE} or name@sha256:<digest>"
    if colon and tag.lower() in FLOATING_TAGS:
        return f"({ref!r}) is pinned to {tag!r}: a latest tag moves with every push; pin a version tag or a digest"
    return None
