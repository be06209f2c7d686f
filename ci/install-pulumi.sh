#!/bin/sh
# Install the Pulumi CLI at the version requirements.txt pins, verified against ci/pulumi-cli.sha256 before anything
# is unpacked. Both CI templates use it (never `curl | sh`).
#
#   PULUMI_VERSION=3.272.0 ci/install-pulumi.sh DEST     # prints DEST/pulumi, the directory to put on PATH
#
# A tarball whose sha256 is not the one committed for it (or no committed sha256 at all) is refused: exit 1,
# nothing unpacked.
set -eu
version="${PULUMI_VERSION:?set PULUMI_VERSION to the pulumi version requirements.txt pins}"
dest="${1:?usage: ci/install-pulumi.sh DEST}"
sums="$(cd "$(dirname "$0")" && pwd)/pulumi-cli.sha256"
case "$(uname -m)" in
  x86_64|amd64) arch=x64 ;;
  aarch64|arm64) arch=arm64 ;;
  *) echo "install-pulumi: no Pulumi CLI build for $(uname -m)" >&2; exit 1 ;;
esac
tarball="pulumi-v${version}-linux-${arch}.tar.gz"
expected="$(awk -v f="$tarball" '$2 == f { print $1 }' "$sums")"
if ! printf '%s\n' "$expected" | grep -Eq '^[0-9a-f]{64}$'; then
  echo "install-pulumi: $sums has no sha256 for $tarball; copy its line from pulumi-${version}-checksums.txt" \
       "on the Pulumi release (refusing to install an unverified CLI)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsSL --retry 3 --proto '=https' --tlsv1.2 -o "$tmp/$tarball" "https://get.pulumi.com/releases/sdk/$tarball"
actual="$(sha256sum "$tmp/$tarball" | cut -d' ' -f1)"
if [ "$actual" != "$expected" ]; then
  echo "install-pulumi: $tarball has sha256 $actual, expected $expected (refusing to install it)" >&2
  exit 1
fi
mkdir -p "$dest"
tar -xzf "$tmp/$tarball" -C "$dest"
installed="$("$dest/pulumi/pulumi" version)"
if [ "$installed" != "v$version" ]; then
  echo "install-pulumi: the CLI reports $installed, expected v$version" >&2
  exit 1
fi
echo "install-pulumi: Pulumi CLI $installed ($tarball, sha256 verified)" >&2
echo "$dest/pulumi"
