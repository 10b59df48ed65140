#!/bin/bash
# The sd-runtime builder VM's startup script (Container-Optimized OS). components/runtime_bake/builder.py sends
# this file unchanged as the `startup-script` metadata; what differs per bake comes as the instance's
# metadata attributes sd-bake-*. It formats and mounts the blank data disk, runs bake.py in the base
# image with the disk at the runtime root, and publishes progress in the guest attributes
# $NAMESPACE/step, status (running|done|failed) and error; all output goes to the serial console.
# Not part of the runtime image's identity: the bake recomputes that identity itself (--expected-hash).
set -euo pipefail

DEVICE=/dev/disk/by-id/google-sd-runtime-build  # deviceName BUILDER_DEVICE of the blank disk
MOUNT=/mnt/disks/runtime  # COS: /mnt/disks is writable, most of the root is not
WORK=/var/lib/sd-bake     # COS: /var is writable but not executable; nothing runs from it
CONSOLE=/dev/ttyS0        # serial port 1, which the provider quotes when the bake fails
PULL_RETRY_SECONDS=900
# How long `docker pull` is retried. The builder's service account got roles/artifactregistry.reader
# moments before this VM was created, and IAM grants "typically propagate in 2 minutes, but could
# potentially take 7 minutes or longer" (https://cloud.google.com/iam/docs/access-change-propagation).

exec > >(tee -a "$CONSOLE") 2>&1
MD=http://metadata.google.internal/computeMetadata/v1/instance
export HOME="$WORK"  # docker-credential-gcr writes $HOME/.docker/config.json; root's home is read-only

metadata() { curl -sSf --retry 5 -H 'Metadata-Flavor: Google' "$MD/attributes/$1"; }
NAMESPACE=$(metadata sd-bake-namespace)
IMAGE=$(metadata sd-bake-image)  # the base image by digest: REGISTRY/PROJECT/REPOSITORY/IMAGE@sha256:...
DIGEST=$(metadata sd-bake-digest)
REGISTRY=${IMAGE%%/*}
PYTHON=$(metadata sd-bake-python)
EXPECTED_HASH=$(metadata sd-bake-expected-hash)
RUNTIME=$(metadata sd-bake-runtime)  # where pods mount the disk: the venv remembers this path
# pip's and every other temporary file of the bake go to the data disk, in bake.py's own state directory,
# not to the container's /tmp on the boot disk: the torch wheels alone are gigabytes.
STATE_DIR=$(metadata sd-bake-state-dir)

publish() {  # KEY VALUE
  printf '%s' "$2" | head -c 1000 | curl -sS --retry 5 --retry-connrefused -X PUT \
    -H 'Metadata-Flavor: Google' --data-binary @- "$MD/guest-attributes/$NAMESPACE/$1" \
    || echo "sd-bake: could not publish $1"
}
step() {  # NAME; kept in a file too, since bake steps are announced inside a pipeline's subshell
  printf '%s' "$1" > "$WORK/step"; echo "sd-bake: step $1"; publish step "$1"; publish status running
}
finish() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    local reason
    reason="step $(cat "$WORK/step" 2>/dev/null || echo start) exited with status $rc"
    if [ -s "$WORK/failure" ]; then reason="$(cat "$WORK/failure")"; fi
    echo "sd-bake: FAILED: $reason"
    publish error "$reason"
    publish status failed
  fi
}
trap finish EXIT

pull_base_image() {  # retried with backoff while the builder's new IAM grant propagates
  local waited=0 delay=5
  until docker pull "$IMAGE"; do
    if [ "$waited" -ge "$PULL_RETRY_SECONDS" ]; then
      printf 'docker pull %s still failed after %s s of retries: check that the builder service account has roles/artifactregistry.reader and that the image exists' \
        "$IMAGE" "$waited" > "$WORK/failure"
      return 1
    fi
    echo "sd-bake: docker pull failed; retrying in ${delay} s (a new IAM grant can take minutes to apply)"
    sleep "$delay"
    waited=$((waited + delay))
    delay=$((delay * 2 > 60 ? 60 : delay * 2))
  done
}

mkdir -p "$WORK" "$MOUNT"
rm -f "$WORK/failure" "$WORK/step"
step format-disk
for _ in $(seq 120); do if [ -e "$DEVICE" ]; then break; fi; sleep 1; done
blkid "$DEVICE" >/dev/null || mkfs.ext4 -q -m 0 -L sd-runtime -E lazy_itable_init=0,lazy_journal_init=0,discard "$DEVICE"
mountpoint -q "$MOUNT" || mount -o discard,defaults "$DEVICE" "$MOUNT"
# Temporary files a bake cut short by a reboot left on the disk (bake.py resumes; pip names its own pip-*).
rm -rf "$MOUNT/$STATE_DIR"/pip-* "$MOUNT/$STATE_DIR"/tmp*

step pull-base-image
metadata sd-bake-script > "$WORK/bake.py"
metadata sd-bake-recipe > "$WORK/recipe.json"
docker-credential-gcr configure-docker --registries="$REGISTRY"
pull_base_image

# The bake runs as root in the base image, with its Python, at the path pods mount the disk at.
# Its progress command prints "sd-bake-progress STEP STATUS"; each running step is published.
docker run --rm --user 0:0 --env TMPDIR="$RUNTIME/$STATE_DIR" --volume "$MOUNT:$RUNTIME" --volume "$WORK:/bake:ro" \
    "$IMAGE" "$PYTHON" /bake/bake.py --recipe /bake/recipe.json --root "$RUNTIME" --base-image-digest "$DIGEST" \
    --expected-hash "$EXPECTED_HASH" --progress-cmd "echo sd-bake-progress" 2>&1 |
  while IFS= read -r line; do
    printf '%s\n' "$line"
    case "$line" in
      "sd-bake-progress "*" running") name="${line#sd-bake-progress }"; step "${name% running}" ;;
      "bake failed at "*) printf '%s' "$line" > "$WORK/failure" ;;
    esac
  done

step unmount
sync
fstrim "$MOUNT" || true  # blocks the bake freed (its temporary files included) stay out of the image
umount "$MOUNT"
publish status "done"
echo "sd-bake: done"
