#!/usr/bin/env bash
# kiln bake: what the builder instance runs, one step per SSM Run Command.
#
#   builder.sh mount-volume   format (if blank) and mount the model volume
#   builder.sh copy-model     copy the model from S3 onto the model volume
#   builder.sh verify-model   check every file against the checksum manifest
#   builder.sh prefetch       pull the prefetch images into containerd (k8s.io namespace)
#   builder.sh record         record the model version on the node
#
# Inputs come from the environment (set by automation/bake/steps.py):
#   KILN_MODEL_URI      s3://bucket/prefix/ holding the model and MANIFEST.sha256
#   KILN_MODEL_VERSION  e.g. v6
#   KILN_MODEL_PATH     mount point, e.g. /opt/models
#   KILN_MODEL_DEVICE   e.g. /dev/xvdb
#   KILN_IMAGES         space-separated image references
#   KILN_REGION         region for ECR logins
#   KILN_ETC_DIR        where the node records its model version (default /etc/kiln)
set -euo pipefail

step="${1:?usage: builder.sh STEP}"
manifest="MANIFEST.sha256"

log() { echo "kiln-bake[$step]: $*"; }

mount_volume() {
  # Nitro instances expose EBS volumes as NVMe devices; the requested name is a symlink.
  local dev="$KILN_MODEL_DEVICE"
  if [ ! -e "$dev" ]; then
    dev="$(readlink -f "/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol"* 2>/dev/null | tail -n1 || true)"
  fi
  [ -n "$dev" ] && [ -e "$dev" ] || { log "model device $KILN_MODEL_DEVICE not found"; exit 1; }
  if ! blkid "$dev" >/dev/null 2>&1; then
    log "formatting $dev as xfs"
    mkfs.xfs -L kiln-model "$dev"
  fi
  mkdir -p "$KILN_MODEL_PATH"
  mountpoint -q "$KILN_MODEL_PATH" || mount "$dev" "$KILN_MODEL_PATH"
  # Nodes mount the volume by label at boot, read-only: a Job that mounts the claim without readOnly still
  # cannot write to the model (user data remounts it read-only too). Replaces an entry a base AMI brought.
  local fstab="${KILN_FSTAB:-/etc/fstab}"
  sed -i '/^LABEL=kiln-model /d' "$fstab"
  echo "LABEL=kiln-model $KILN_MODEL_PATH xfs ro,noatime,nofail 0 0" >> "$fstab"
  log "mounted $dev on $KILN_MODEL_PATH"
}

# Refuse a model tree holding anything but regular files, directories and relative symlinks that stay inside
# it: a symlink out of the model (absolute, or ../ past its top, also through other links) would bake a view of
# the builder's own disk into the AMI, and checksums would be read through it; a device, fifo or socket file is
# never model data. Every offending path is named; nothing is changed.
refuse_unsafe_entries() {
  local dir="$1" top entries path target resolved bad=0
  if [ -L "$dir" ]; then
    log "refusing the model: $dir is itself a symlink (to $(readlink "$dir"))" >&2
    exit 1
  fi
  [ -d "$dir" ] || return 0
  top="$(realpath -e "$dir")"
  entries="$(mktemp)"
  find "$dir" \( -type l -o ! \( -type f -o -type d \) \) -print0 > "$entries"   # a find error fails the step
  while IFS= read -r -d '' path; do
    if [ -L "$path" ]; then
      target="$(readlink "$path")"
      resolved="$(realpath -m "$path")"
      if [[ "$target" == /* ]]; then
        log "refusing the model: $path is a symlink to the absolute path $target (outside the model wherever it is mounted)" >&2
        bad=1
      elif [[ "$resolved" != "$top" && "$resolved" != "$top"/* ]]; then
        log "refusing the model: $path is a symlink to $target, which leads outside $dir" >&2
        bad=1
      fi
    else
      log "refusing the model: $path is a $(stat -c %F "$path"), not a regular file" >&2
      bad=1
    fi
  done < "$entries"
  rm -f "$entries"
  [ "$bad" -eq 0 ] || exit 1
}

copy_model() {
  local dest="$KILN_MODEL_PATH/$KILN_MODEL_VERSION"
  mkdir -p "$dest"
  refuse_unsafe_entries "$dest"   # what is already there (a retried step, a model volume a base AMI brought)
  log "copying ${KILN_MODEL_URI%/}/ to $dest"
  aws s3 sync --only-show-errors --region "$KILN_REGION" "${KILN_MODEL_URI%/}/" "$dest/"
  refuse_unsafe_entries "$dest"   # and what the source brought, before anything reads or images it
  [ -f "$dest/$manifest" ] || { log "$manifest missing under $KILN_MODEL_URI"; exit 1; }
}

verify_model() {
  local dest="$KILN_MODEL_PATH/$KILN_MODEL_VERSION"
  refuse_unsafe_entries "$dest"   # sha256sum would read through a link out of the model
  cd "$dest"
  log "verifying $(wc -l < "$manifest") files against $manifest"
  # --strict: a malformed manifest line fails too; any mismatch fails the bake.
  sha256sum --check --strict --quiet "$manifest"
  log "model verified"
}

prefetch() {
  [ -n "${KILN_IMAGES:-}" ] || { log "no images to prefetch"; return 0; }
  systemctl start containerd
  local images
  read -r -a images <<< "$KILN_IMAGES"   # split on whitespace only: no glob expansion of a reference
  for image in "${images[@]}"; do
    registry="${image%%/*}"
    auth=()
    if [[ "$registry" == *.dkr.ecr.*.amazonaws.com ]]; then
      auth=(--user "AWS:$(aws ecr get-login-password --region "$KILN_REGION")")
    fi
    log "pulling $image"
    ctr --namespace k8s.io images pull "${auth[@]}" "$image" >/dev/null
  done
  log "prefetched $(echo "$KILN_IMAGES" | wc -w) image(s)"
}

record() {
  local etc="${KILN_ETC_DIR:-/etc/kiln}"
  mkdir -p "$etc"
  echo "$KILN_MODEL_VERSION" > "$etc/model-version"
  # Relative, so it resolves wherever the volume is mounted (in a Job's container too).
  ln -sfn "$KILN_MODEL_VERSION" "$KILN_MODEL_PATH/current"
  sync
  log "model version $KILN_MODEL_VERSION recorded"
}

case "$step" in
  mount-volume) mount_volume ;;
  copy-model)   copy_model ;;
  verify-model) verify_model ;;
  prefetch)     prefetch ;;
  record)       record ;;
  *) echo "unknown step: $step" >&2; exit 2 ;;
esac
