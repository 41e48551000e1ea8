#!/usr/bin/env bash
# Cluster test with a real Docker daemon: a Docker Swarm of the mlir-rl image (docker/stack.yaml, N replicas,
# tokens as a Docker secret, health through the gRPC health service), reached through the service's task DNS name
# (tasks.<service>) by mlir-rl-cli and by the Python vector env (mlir_rl.make_vec(servers="dns:///...")); one
# replica is SIGKILLed mid-run (every episode must still complete, on the others), Swarm replaces it and it rejoins;
# a `docker stop` drains (NOT_SERVING, exit 0). Prints figures: image size, time to healthy, episodes completed and
# lost, evaluations per minute with 1 and with 2 replicas.
#
# Needs root. Bounded in time, and it cleans up whatever happens (trap): containers, the swarm, the daemon (by its
# pid), its network namespace, mounts and temporary files.
#
# Isolation: the daemon runs in a network namespace of its own (`ip netns`), whose only interfaces are loopback
# and a dummy interface carrying the swarm's advertise address; Swarm's overlay network, bridges and iptables rules
# live there and in the containers' namespaces, so nothing of it touches the host's network, and no packet leaves
# this machine. The image is built (when not cached) by a second, short-lived daemon on the host network (apt in
# the build needs the Debian mirror), as scripts/docker-smoke.sh does, and handed over as a `docker save` archive.
#
# Image cache: the archive is kept in $MLIR_RL_DOCKER_CACHE/images/, named by a hash of the build's inputs (the
# files of the build context below, and the base image), so a run whose inputs did not change reuses it (warm run)
# instead of compiling the project (cold run). The context leaves out what the image does not depend on: tests
# other than the CMake ones, docs, Markdown, the Python client (but its generated-stub folder), .ci, scripts other
# than install-deps.sh, and docker/'s deployment files.
#
# Usage: scripts/docker-cluster-test.sh [--image-only] [--prebuilt BUILD_DIR]
#   --image-only   only make sure the image archive for the current sources exists (build it if needed)
#   --prebuilt BUILD_DIR
#                  the image's binaries are BUILD_DIR/bin's (mlir-rl-server, -cli, -runner, built on this Debian 12
#                  host with the same packages), put on the Dockerfile's runtime-base stage by
#                  docker/Dockerfile.prebuilt: a few minutes cold instead of compiling the project in the image.
#                  What CI runs, after scripts/test.sh built them.
# Environment (optional):
#   MLIR_RL_DOCKER_CACHE      cache folder (default /var/cache/mlir-rl-docker): base tarball, image archives
#   MLIR_RL_CLUSTER_REPLICAS  replicas (default 2)
#   MLIR_RL_BUILD_TIMEOUT     seconds allowed for the image build (default 3600)
#   MLIR_RL_CLUSTER_TIMEOUT   seconds allowed for the swarm part (default 900)
#
# Exit status 0 with "SKIP: ..." when no Docker daemon can be started here (not root, no docker.io).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${MLIR_RL_DOCKER_CACHE:-/var/cache/mlir-rl-docker}
IMAGE_DIR=$CACHE_DIR/images
BASE_TAR=$CACHE_DIR/bookworm-minbase.tar
BASE_TAG=local/bookworm:latest
REPLICAS=${MLIR_RL_CLUSTER_REPLICAS:-2}
BUILD_TIMEOUT=${MLIR_RL_BUILD_TIMEOUT:-3600}
CLUSTER_TIMEOUT=${MLIR_RL_CLUSTER_TIMEOUT:-900}
KEEP_IMAGES=2 # archives kept in the cache (the newest ones)
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd
STACK=mlirrl
SERVICE=${STACK}_server
NETNS=""
SWARM_ADDR=10.213.0.1 # the dummy interface in the daemon's own network namespace

MODE=full
PREBUILT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --image-only) MODE=image ;;
    --prebuilt)
      [ $# -ge 2 ] || { echo "docker-cluster-test: --prebuilt needs a build folder" >&2; exit 2; }
      PREBUILT=$(cd "$2" && pwd) || exit 2
      shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-cluster-test: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PREBUILT_BINARIES="mlir-rl-server mlir-rl-cli mlir-rl-runner"
if [ -n "$PREBUILT" ]; then
  for b in $PREBUILT_BINARIES; do
    [ -x "$PREBUILT/bin/$b" ] || { echo "docker-cluster-test: no $PREBUILT/bin/$b (build it first)" >&2; exit 2; }
  done
fi

T0=$SECONDS
# The log goes to the script's standard error as it was at the start (fd 3), also from a trap that fires while a
# command's output is redirected to a file.
exec 3>&2
log() { printf '[docker-cluster +%4ss] %s\n' "$((SECONDS - T0))" "$*" >&3; }
die() { log "FAIL: $*"; exit 1; }
skip() { log "SKIP: $*"; echo "0 passed, 0 failed, 1 skipped"; exit 0; }

# bounded SECONDS [--stdin FILE] CMD...: CMD under a time limit, in the background so that a signal runs the trap.
CHILD=""
bounded() {
  local t=$1 in=/dev/null rc=0; shift
  if [ "$1" = --stdin ]; then in=$2; shift 2; fi
  timeout "$t" "$@" <"$in" &
  CHILD=$!
  wait "$CHILD" || rc=$?
  CHILD=""
  return $rc
}

[ "$(id -u)" -eq 0 ] || skip "no docker: needs root to start a private Docker daemon"

WORK=""
DOCKERD_PID=""

unmount_below() {
  local root=$1 m
  [ -n "$root" ] || return 0
  findmnt -rn -o TARGET | awk -v r="$root" '$0 == r || index($0, r "/") == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done
}

stop_daemon() {
  [ -n "$DOCKERD_PID" ] || return 0
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    local ids containerd_pid=""
    ids=$(timeout 30 "$DOCKER" ps -aq 2>/dev/null || true)
    # shellcheck disable=SC2086
    [ -z "$ids" ] || timeout 60 "$DOCKER" rm -f $ids >/dev/null 2>&1 || true
    [ -f "$WORK/exec/containerd/containerd.pid" ] && containerd_pid=$(cat "$WORK/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local _
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd did not stop in 30 s: killing pid $DOCKERD_PID"
      kill -KILL "$DOCKERD_PID" 2>/dev/null || true
      if [ -n "$containerd_pid" ] && kill -0 "$containerd_pid" 2>/dev/null; then kill -KILL "$containerd_pid" 2>/dev/null || true; fi
    fi
  fi
  wait "$DOCKERD_PID" 2>/dev/null || true
  DOCKERD_PID=""
}

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then kill -TERM "$CHILD" 2>/dev/null; wait "$CHILD" 2>/dev/null; fi
  if [ $rc -ne 0 ] && [ -n "$WORK" ] && [ -s "$WORK/dockerd.log" ]; then
    log "last lines of the daemon's log:"; tail -n 15 "$WORK/dockerd.log" >&3
  fi
  if [ -n "$DOCKERD_PID" ]; then
    [ -n "$NETNS" ] && timeout 60 "$DOCKER" swarm leave --force >/dev/null 2>&1
    log "stopping dockerd (pid $DOCKERD_PID)"
    stop_daemon
  fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    unmount_below "$WORK"
    if findmnt -rn -o TARGET | awk -v r="$WORK" 'index($0, r "/") == 1' | grep -q .; then
      log "warning: mounts remain below $WORK; not deleting it"
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  if [ -n "$NETNS" ]; then ip netns delete "$NETNS" 2>/dev/null || log "warning: could not delete netns $NETNS"; fi
  if [ $rc -eq 0 ]; then log "done in $((SECONDS - T0)) s"; else log "exit status $rc after $((SECONDS - T0)) s"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- packages and base ---------------------------------------------------------------------------------------------
ensure_packages() {
  local missing=() p
  for p in docker.io debootstrap iptables; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  bounded 300 apt-get update -q >/dev/null || skip "no docker: apt-get update failed"
  bounded 600 apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null \
    || skip "no docker: cannot install ${missing[*]}"
}

# start_daemon DATA_ROOT [netns]: a private dockerd; with a netns, inside it (and with iptables: its rules stay there)
start_daemon() {
  local data=$1 ns=${2:-}
  mkdir -p "$data" "$WORK/exec"
  printf '{ "deprecated-key-path": "%s/key.json" }\n' "$WORK" >"$WORK/daemon.json"
  local start=$SECONDS
  if [ -n "$ns" ]; then
    # nsenter, not `ip netns exec`: that one also gives a mount namespace with a fresh /sys, without the cgroup
    # file systems the daemon needs.
    nsenter --net="/run/netns/$ns" "$DOCKERD" --config-file "$WORK/daemon.json" --bridge=none \
      --storage-driver=overlay2 --data-root "$data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
      -H "unix://$WORK/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  else
    "$DOCKERD" --config-file "$WORK/daemon.json" --iptables=false --ip-forward=false --bridge=none \
      --storage-driver=overlay2 --data-root "$data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
      -H "unix://$WORK/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  fi
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$WORK/docker.sock"
  local _
  for _ in $(seq 1 60); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || { tail -n 20 "$WORK/dockerd.log" >&2; skip "no docker: dockerd exited while starting"; }
    if timeout 10 "$DOCKER" version >/dev/null 2>&1; then
      log "private dockerd (pid $DOCKERD_PID${ns:+, netns $ns}) up in $((SECONDS - start)) s"
      return 0
    fi
    sleep 1
  done
  skip "no docker: dockerd did not answer within 60 s"
}

# --- the image (cached by a hash of its inputs) ----------------------------------------------------------------------
# The build context: files git knows (tracked and untracked-but-not-ignored), less those the image does not use.
context_files() {
  git -C "$REPO" ls-files -z --cached --others --exclude-standard \
    | while IFS= read -r -d '' f; do
        case "$f" in
          build/* | build-*/* | .cache/* | .ci/* | docs/* | tests/e2e/* | tests/fuzz/* | tests/perf/*.py | tests/cluster/*) continue ;;
          clients/python/mlir_rl/v1/*) ;;
          clients/python/*) continue ;;
          scripts/install-deps.sh) ;;
          scripts/*) continue ;;
          docker/Dockerfile | docker/entrypoint.sh | docker/check-libs.sh) ;;
          docker/*) continue ;;
          *.md) continue ;;
        esac
        [ -f "$REPO/$f" ] && printf '%s\0' "$f"
      done | sort -z
}

make_context() { # a deterministic tar (names sorted, owners and times fixed): its hash names the image
  local out=$1
  if [ -z "$PREBUILT" ]; then
    context_files | tar -C "$REPO" --null -T - --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out"
    return
  fi
  # --prebuilt: the Dockerfiles, the files runtime-base copies, and prebuilt/ (stripped binaries, benchmarks/).
  local dir=$WORK/prebuilt-context b
  mkdir -p "$dir/docker" "$dir/prebuilt/bin"
  cp "$REPO/docker/Dockerfile" "$REPO/docker/Dockerfile.prebuilt" "$REPO/docker/entrypoint.sh" \
    "$REPO/docker/check-libs.sh" "$dir/docker/"
  for b in $PREBUILT_BINARIES; do install -m 0755 -s "$PREBUILT/bin/$b" "$dir/prebuilt/bin/"; done
  cp -r "$REPO/benchmarks" "$dir/prebuilt/benchmarks"
  (cd "$dir" && find . -type f -printf '%P\0' | sort -z \
    | tar --null -T - --owner=0 --group=0 --numeric-owner --mtime=@0 -cf "$out")
  rm -rf "$dir"
}

ensure_image() {
  mkdir -p "$IMAGE_DIR"
  bash "$REPO/scripts/docker-smoke.sh" --base-only >"$WORK/base.log" 2>&1 \
    || { tail -n 20 "$WORK/base.log" >&2; die "could not make the Debian base (scripts/docker-smoke.sh --base-only)"; }
  local smoke_base=$CACHE_DIR/bookworm-minbase.tar
  [ -s "$smoke_base" ] || die "no base tarball at $smoke_base"
  make_context "$WORK/context.tar"
  local hash
  hash=$({ sha256sum <"$WORK/context.tar"; sha256sum <"$smoke_base"; } | sha256sum | cut -c1-16)
  IMAGE=mlir-rl:${PREBUILT:+prebuilt-}in-$hash
  IMAGE_TAR=$IMAGE_DIR/mlir-rl-$hash.tar
  if [ -s "$IMAGE_TAR" ]; then
    log "reusing the cached image $IMAGE ($IMAGE_TAR, $(du -h "$IMAGE_TAR" | cut -f1)): its inputs did not change"
    touch "$IMAGE_TAR"
    return 0
  fi
  if [ -n "$PREBUILT" ]; then
    log "no cached image for these inputs ($hash): building it from the binaries in $PREBUILT/bin"
  else
    log "no cached image for these inputs ($hash): building it (cold; minutes: it compiles the project)"
  fi
  local start=$SECONDS
  start_daemon "$WORK/build-data"
  bounded 300 --stdin "$smoke_base" "$DOCKER" import --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  if [ -n "$PREBUILT" ]; then
    # The runtime-base stage (the first: the classic builder builds no other), then the binaries on it.
    bounded "$BUILD_TIMEOUT" --stdin "$WORK/context.tar" "$DOCKER" build --force-rm --network=host \
      --build-arg BASE_IMAGE="$BASE_TAG" --target runtime-base -f docker/Dockerfile -t mlir-rl:runtime-base - \
      >"$WORK/build.log" 2>&1 \
      && bounded "$BUILD_TIMEOUT" --stdin "$WORK/context.tar" "$DOCKER" build --force-rm \
        --build-arg RUNTIME_BASE=mlir-rl:runtime-base -f docker/Dockerfile.prebuilt -t "$IMAGE" - \
        >>"$WORK/build.log" 2>&1 \
      || { tail -n 30 "$WORK/build.log" >&2; die "docker build failed or timed out"; }
  else
    bounded "$BUILD_TIMEOUT" --stdin "$WORK/context.tar" "$DOCKER" build --force-rm --network=host \
      --build-arg BASE_IMAGE="$BASE_TAG" -f docker/Dockerfile -t "$IMAGE" - >"$WORK/build.log" 2>&1 \
      || { tail -n 30 "$WORK/build.log" >&2; die "docker build failed or timed out"; }
  fi
  log "built $IMAGE in $((SECONDS - start)) s; size $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
  bounded 600 "$DOCKER" save -o "$IMAGE_TAR.tmp" "$IMAGE" || die "docker save failed"
  mv "$IMAGE_TAR.tmp" "$IMAGE_TAR"
  stop_daemon
  unmount_below "$WORK/exec"
  rm -rf --one-file-system "$WORK/build-data" "$WORK/exec"
  # Only the newest archives stay.
  ls -1t "$IMAGE_DIR"/mlir-rl-*.tar 2>/dev/null | tail -n +$((KEEP_IMAGES + 1)) | xargs -r rm -f
  log "image archive $IMAGE_TAR ($(du -h "$IMAGE_TAR" | cut -f1)); image made in $((SECONDS - start)) s"
}

WORK=$(mktemp -d /tmp/mlir-rl-cluster.XXXXXX)
log "work dir $WORK"
ensure_packages
ensure_image
[ "$MODE" = image ] && { echo "1 passed, 0 failed"; exit 0; }

# --- the swarm, in a network namespace of its own ---------------------------------------------------------------------
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); log "ok: $*"; }

# Everything below must finish within CLUSTER_TIMEOUT: a watchdog ends the script (the trap cleans up).
( sleep "$CLUSTER_TIMEOUT"; log "FAIL: the swarm part took longer than $CLUSTER_TIMEOUT s"; kill -TERM $$ ) &
WATCHDOG=$!
# (set +e first: errexit applies inside traps, and `(exit $rc)` would end the handler before the clean-up.)
trap 'rc=$?; set +e; kill $WATCHDOG 2>/dev/null; (exit $rc); cleanup' EXIT

NETNS=mlirrl-cluster-$$
ip netns add "$NETNS" || skip "no docker: cannot make a network namespace"
ip -n "$NETNS" link set lo up
# The swarm's advertise address: a veth pair that never leaves the namespace.
ip -n "$NETNS" link add swarm0 type veth peer name swarm1
ip -n "$NETNS" addr add "$SWARM_ADDR/24" dev swarm0
ip -n "$NETNS" link set swarm0 up
ip -n "$NETNS" link set swarm1 up
start_daemon "$WORK/data" "$NETNS"

start=$SECONDS
bounded 600 "$DOCKER" load -i "$IMAGE_TAR" >/dev/null || die "docker load failed"
log "loaded $IMAGE in $((SECONDS - start)) s; image size $("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
IMAGE_MB=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f", $1 / 1e6 }')

bounded 60 "$DOCKER" swarm init --advertise-addr "$SWARM_ADDR" --listen-addr "$SWARM_ADDR:2377" >/dev/null \
  || { tail -n 20 "$WORK/dockerd.log" >&2; skip "no docker: swarm init failed (see the daemon's log above)"; }
log "swarm initialised (single node, advertise address $SWARM_ADDR inside netns $NETNS)"

TOKEN=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
printf 'cluster-test %s\n' "$TOKEN" >"$WORK/tokens"
bounded 30 --stdin "$WORK/tokens" "$DOCKER" secret create mlir-rl-tokens - >/dev/null || die "docker secret create failed"
start=$SECONDS
MLIR_RL_IMAGE=$IMAGE MLIR_RL_REPLICAS=$REPLICAS bounded 120 "$DOCKER" stack deploy -c "$REPO/docker/stack.yaml" "$STACK" \
  >"$WORK/deploy.log" 2>&1 || { cat "$WORK/deploy.log" >&2; die "docker stack deploy failed"; }

healthy_count() {
  local n=0 c
  for c in $("$DOCKER" ps -q --filter "label=com.docker.swarm.service.name=$SERVICE"); do
    [ "$("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$c" 2>/dev/null)" = healthy ] && n=$((n + 1))
  done
  echo "$n"
}
deadline=$((SECONDS + 240))
while [ "$(healthy_count)" -lt "$REPLICAS" ]; do
  if [ $SECONDS -ge $deadline ]; then
    "$DOCKER" service ps --no-trunc "$SERVICE" >&2 || true
    for c in $("$DOCKER" ps -aq --filter "label=com.docker.swarm.service.name=$SERVICE"); do "$DOCKER" logs --tail 20 "$c" >&2 || true; done
    die "$REPLICAS replicas not healthy within 240 s"
  fi
  sleep 1
done
HEALTHY_S=$((SECONDS - start))
pass "stack deployed: $REPLICAS replicas healthy $HEALTHY_S s after \`docker stack deploy\`"

# Each replica on a core of its own (the entry point's slot pinning), and as the image's user.
cores=""
for c in $("$DOCKER" ps -q --filter "label=com.docker.swarm.service.name=$SERVICE"); do
  pid=$("$DOCKER" inspect -f '{{.State.Pid}}' "$c")
  server_pid=$(pgrep -P "$pid" -f mlir-rl-server || echo "$pid")
  cores="$cores $(taskset -pc "$server_pid" | sed 's/.*: //')"
  [ "$("$DOCKER" exec "$c" id -u)" = 10001 ] || die "replica $c does not run as uid 10001"
done
[ "$(echo $cores | tr ' ' '\n' | sort -u | wc -l)" -eq "$REPLICAS" ] || die "replicas share cores: $cores"
pass "replicas pinned to distinct cores:$cores"

# A client container on the stack's (attachable) overlay network: the CLI runs in it, the Python client in its
# network namespace (nsenter), resolving names with Docker's embedded DNS.
NET=${STACK}_mlir-rl
ANCHOR=$("$DOCKER" run -d --name mlirrl-client --network "$NET" --entrypoint sleep "$IMAGE" 3600)
ANCHOR_PID=$("$DOCKER" inspect -f '{{.State.Pid}}' "$ANCHOR")
addrs=$("$DOCKER" exec "$ANCHOR" getent ahostsv4 "tasks.$SERVICE" | awk '$2 == "STREAM" { print $1 }' | sort -u)
[ "$(echo "$addrs" | grep -c .)" -eq "$REPLICAS" ] || die "tasks.$SERVICE lists: $addrs"
pass "tasks.$SERVICE resolves to every replica: $(echo $addrs)"

# The CLI: the health service needs no token; everything else does.
for a in $addrs; do
  "$DOCKER" exec "$ANCHOR" mlir-rl-cli --server="$a:50051" health >/dev/null || die "health of $a"
  if "$DOCKER" exec "$ANCHOR" mlir-rl-cli --server="$a:50051" list >"$WORK/notoken.out" 2>&1; then
    die "$a served \`list\` without a token"
  fi
  grep -q "gRPC code 16" "$WORK/notoken.out" || { cat "$WORK/notoken.out" >&2; die "no UNAUTHENTICATED from $a"; }
  bounded 300 "$DOCKER" exec -e MLIR_RL_TOKEN="$TOKEN" "$ANCHOR" mlir-rl-cli --server="$a:50051" episode \
    --benchmark=benchmark://nn-ops/matmul_64x64x64_f32 --policy=random >"$WORK/episode.out" 2>&1 \
    || { cat "$WORK/episode.out" >&2; die "random episode on $a"; }
done
"$DOCKER" exec -e MLIR_RL_TOKEN="$TOKEN" "$ANCHOR" mlir-rl-cli --server="tasks.$SERVICE:50051" list >/dev/null \
  || die "mlir-rl-cli list through tasks.$SERVICE"
pass "mlir-rl-cli: health without a token, UNAUTHENTICATED without one for the rest, a random episode on each replica"

# The Python vector env across the replicas (tests/cluster/swarm_client.py asserts; its last line is JSON).
printf 'nameserver 127.0.0.11\noptions ndots:0\n' >"$WORK/resolv.conf"
start=$SECONDS
if bounded 600 env MLIR_RL_TOKEN="$TOKEN" DOCKER_HOST="$DOCKER_HOST" PYTHONPATH="$REPO/clients/python" \
    nsenter --net="/proc/$ANCHOR_PID/ns/net" unshare --mount sh -c \
    'mount --bind "$1" /etc/resolv.conf && exec /usr/bin/python3 "$2" --service "$3" --replicas "$4"' \
    sh "$WORK/resolv.conf" "$REPO/tests/cluster/swarm_client.py" "$SERVICE" "$REPLICAS" >"$WORK/client.out" 2>"$WORK/client.err"; then
  sed 's/^/    /' "$WORK/client.err" >&2
  RESULT=$(tail -n 1 "$WORK/client.out")
  pass "Python vector env across the swarm in $((SECONDS - start)) s: $RESULT"
else
  sed 's/^/    /' "$WORK/client.err" >&2
  FAILED=$((FAILED + 1)); log "FAIL: the Python client scenario (output above)"
  RESULT="{}"
fi

log "figures: image $IMAGE_MB MB; $REPLICAS replicas healthy ${HEALTHY_S} s after deploy; client: $RESULT"
echo "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
