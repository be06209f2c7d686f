#!/bin/sh
# Install the AWS CLI from ci/awscli-requirements.txt — every file of its closure pinned by version and sha256 —
# into a virtualenv of its own (it does not share the program's pins). Both CI templates use it: pulumi-eks's
# kubeconfig runs `aws eks get-token`.
#
#   ci/install-awscli.sh DEST     # prints DEST/bin, the directory to put on PATH
set -eu
dest="${1:?usage: ci/install-awscli.sh DEST}"
requirements="$(cd "$(dirname "$0")" && pwd)/awscli-requirements.txt"
python3 -m venv "$dest" >&2
"$dest/bin/pip" install -q --disable-pip-version-check --require-hashes --no-deps -r "$requirements" >&2
"$dest/bin/aws" --version >&2
echo "$dest/bin"
