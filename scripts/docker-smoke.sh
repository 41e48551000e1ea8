#!/usr/bin/env bash
# End-to-end check of docker/Dockerfile on this machine: base image -> private Docker daemon -> image build ->
# server container -> `mlir-rl-cli list` (and one random episode) against it over loopback -> clean-up.
#
# Slow (the image build compiles the whole project), so CI does not run it. Needs root. Safe to interrupt: a trap
# removes the containers, stops the daemon it started (by pid), unmounts what the daemon or debootstrap left under
# its temporary directory and deletes that directory.
#
# Usage: scripts/docker-smoke.sh [--base-only | --runtime-only] [--rebuild-base]
#   --base-only      only make (or reuse) the cached Debian base root file system, then stop
#   --runtime-only   build only the image's `runtime-base` stage (the run-time Debian packages, no C++ build) and
#                    check the libraries the server loads are there; about 20 s instead of a full build
#   --rebuild-base   make the base again even if a cached one exists
#
# Environment (all optional):
#   MLIR_RL_DOCKER_CACHE    cache folder for the base tarball (default /var/cache/mlir-rl-docker)
#   MLIR_RL_DOCKER_PERSIST  1: keep the daemon's data root in the cache folder, so layers (the dependency install,
#                           the base import) are reused by the next run; default: a fresh data root every run
#   MLIR_RL_IMAGE           tag of the image built (default mlir-rl:smoke)
#   MLIR_RL_DEBIAN_MIRROR, MLIR_RL_DEBIAN_SECURITY_MIRROR
#                           Debian archive URIs for the base; default: the ones this host's apt uses
#   MLIR_RL_BUILD_TIMEOUT   seconds allowed for `docker build` (default 5400)
#   MLIR_RL_SERVER_WAIT     seconds allowed for the server to answer and report healthy (default 180)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SUITE=bookworm
BASE_TAG=local/bookworm:latest
CACHE_DIR=${MLIR_RL_DOCKER_CACHE:-/var/cache/mlir-rl-docker}
BASE_TAR=$CACHE_DIR/$SUITE-minbase.tar
IMAGE=${MLIR_RL_IMAGE:-mlir-rl:smoke}
PERSIST=${MLIR_RL_DOCKER_PERSIST:-0}
BUILD_TIMEOUT=${MLIR_RL_BUILD_TIMEOUT:-5400}
SERVER_WAIT=${MLIR_RL_SERVER_WAIT:-180}
DEBOOTSTRAP_TIMEOUT=900
DAEMON_WAIT=60
CLI_POLL_TIMEOUT=10 # one `list` while waiting for the server
EPISODE_TIMEOUT=300
# Debian's client and daemon (20.10); another `docker` earlier on PATH may be a newer client that this daemon rejects.
DOCKER=/usr/bin/docker
DOCKERD=/usr/sbin/dockerd

MODE=full
REBUILD_BASE=0
for arg in "$@"; do
  case "$arg" in
    --base-only) MODE=base ;;
    --runtime-only) MODE=runtime ;;
    --rebuild-base) REBUILD_BASE=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "docker-smoke: unknown argument: $arg (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[docker-smoke +%4ss] %s\n' "$SECONDS" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# bounded SECONDS [--stdin FILE] CMD...: CMD under a time limit, run in the background and waited for, so that a
# signal to this script runs its trap at once instead of after CMD (bash defers traps while a foreground command
# runs). The clean-up ends a CMD still running, by its pid.
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

[ "$(id -u)" -eq 0 ] || die "needs root (it installs packages and runs a Docker daemon)"

WORK=""
DOCKERD_PID=""
CONTAINER=""

# Unmount everything mounted at or below $1, deepest first (nsfs left by dockerd in exec-root/netns, overlays,
# /proc left by an interrupted debootstrap).
unmount_below() {
  local root=$1 m
  [ -n "$root" ] || return 0
  findmnt -rn -o TARGET | awk -v r="$root" '$0 == r || index($0, r "/") == 1' | sort -r | while read -r m; do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "warning: cannot unmount $m"
  done
}

mounts_below() { findmnt -rn -o TARGET | awk -v r="$1" '$0 == r || index($0, r "/") == 1' | grep -q .; }

stop_daemon() {
  [ -n "$DOCKERD_PID" ] || return 0
  if kill -0 "$DOCKERD_PID" 2>/dev/null; then
    local containerd_pid=""
    [ -f "$WORK/exec/containerd/containerd.pid" ] && containerd_pid=$(cat "$WORK/exec/containerd/containerd.pid" 2>/dev/null || true)
    kill -TERM "$DOCKERD_PID" 2>/dev/null || true
    local _
    for _ in $(seq 1 30); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$DOCKERD_PID" 2>/dev/null; then
      log "dockerd did not stop in 30 s: killing pid $DOCKERD_PID"
      kill -KILL "$DOCKERD_PID" 2>/dev/null || true
      # Its managed containerd is a child that a killed dockerd cannot stop: end it by its own pid.
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
  if [ -n "$CHILD" ] && kill -0 "$CHILD" 2>/dev/null; then
    kill -TERM "$CHILD" 2>/dev/null # timeout passes it on to its command
    wait "$CHILD" 2>/dev/null
  fi
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    local ids
    ids=$(timeout 30 "$DOCKER" ps -aq 2>/dev/null)
    if [ -n "$ids" ]; then
      # shellcheck disable=SC2086
      timeout 60 "$DOCKER" rm -f $ids >/dev/null 2>&1 || log "note: could not remove containers $ids (one still building goes with the daemon)"
    fi
  fi
  if [ $rc -ne 0 ] && [ -n "$WORK" ] && [ -s "$WORK/dockerd.log" ]; then
    log "last lines of the daemon's log:"; tail -n 20 "$WORK/dockerd.log" >&2
  fi
  [ -n "$DOCKERD_PID" ] && log "stopping dockerd (pid $DOCKERD_PID)"
  stop_daemon
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    log "removing $WORK ($(du -shx "$WORK" 2>/dev/null | cut -f1))"
    unmount_below "$WORK"
    [ "$PERSIST" = 1 ] && unmount_below "$CACHE_DIR/data"
    if mounts_below "$WORK"; then
      log "warning: mounts remain below $WORK; not deleting it"
    else
      rm -rf --one-file-system "$WORK"
    fi
  fi
  if [ $rc -eq 0 ]; then log "done"; else log "exit status $rc"; fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- 1. packages ------------------------------------------------------------------------------------------------
ensure_packages() {
  local missing=() p
  for p in docker.io debootstrap; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  bounded 300 apt-get update -q
  bounded 600 apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# --- 2. base image root file system (cached) ---------------------------------------------------------------------
# Prints "URI SUITE" for every enabled `deb` source of this host's apt (deb822 .sources and one-line .list files).
host_apt_sources() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk '
      function flush() { if (types ~ /(^| )deb( |$)/ && enabled != "no") { n = split(uris, u, " "); m = split(suites, s, " ");
                           for (i = 1; i <= n; i++) for (j = 1; j <= m; j++) print u[i], s[j] }
                         types = uris = suites = ""; enabled = "yes" }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      { key = tolower($1); sub(/:$/, "", key); $1 = ""; sub(/^ +/, "")
        if (key == "types") types = $0; else if (key == "uris") uris = $0
        else if (key == "suites") suites = $0; else if (key == "enabled") enabled = tolower($0) }
      END { flush() }' "$f"
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    # deb [options] URI SUITE COMPONENTS...
    sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" | awk '$1 == "deb" && NF >= 3 { print $2, $3 }'
  done
}

build_base() {
  if [ -s "$BASE_TAR" ] && [ "$REBUILD_BASE" = 0 ]; then
    log "reusing the cached base $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
    return 0
  fi
  local sources mirror security
  sources=$(host_apt_sources)
  mirror=${MLIR_RL_DEBIAN_MIRROR:-$(awk -v s="$SUITE" '$2 == s { print $1; exit }' <<<"$sources")}
  [ -n "$mirror" ] || mirror=$(awk '$2 !~ /-security$/ && $1 ~ /debian\/?$/ { print $1; exit }' <<<"$sources")
  security=${MLIR_RL_DEBIAN_SECURITY_MIRROR:-$(awk '$2 ~ /-security$/ { print $1; exit }' <<<"$sources")}
  [ -n "$mirror" ] || die "cannot tell which Debian mirror this host uses: set MLIR_RL_DEBIAN_MIRROR"

  local rootfs=$WORK/rootfs start=$SECONDS
  log "debootstrap --variant=minbase $SUITE (mirror taken from this host's apt sources)"
  bounded "$DEBOOTSTRAP_TIMEOUT" debootstrap --variant=minbase "$SUITE" "$rootfs" "$mirror" >"$WORK/debootstrap.log" 2>&1 \
    || { tail -n 20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log above)"; }
  unmount_below "$rootfs"

  # The same apt sources as the official image: the suite, its updates and (if this host knows it) security.
  rm -f "$rootfs/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$mirror" "$SUITE" "$SUITE"
    if [ -n "$security" ]; then
      printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$security" "$SUITE"
    fi
  } >"$rootfs/etc/apt/sources.list.d/debian.sources"
  [ -n "$security" ] || log "warning: no security suite among this host's apt sources; the base has none"

  # Slim like debian:*-slim: no documentation in later installs, no .deb kept after them.
  cat >"$rootfs/etc/dpkg/dpkg.cfg.d/90-slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
  cat >"$rootfs/etc/apt/apt.conf.d/90-slim" <<'EOF'
APT::Keep-Downloaded-Packages "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
EOF
  find "$rootfs/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  rm -rf "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
  rm -f "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/*

  mkdir -p "$CACHE_DIR"
  tar --numeric-owner -C "$rootfs" -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf --one-file-system "$rootfs"
  log "base made in $((SECONDS - start)) s: $BASE_TAR ($(du -h "$BASE_TAR" | cut -f1))"
}

# --- 3. private daemon ---------------------------------------------------------------------------------------------
start_daemon() {
  local data=$WORK/data
  if [ "$PERSIST" = 1 ]; then data=$CACHE_DIR/data; fi
  mkdir -p "$data" "$WORK/exec"
  # Its own configuration (not the host's /etc/docker/daemon.json), and its identity key in the work dir rather
  # than a new /etc/docker/key.json on the host.
  printf '{ "deprecated-key-path": "%s/key.json" }\n' "$WORK" >"$WORK/daemon.json"
  local start=$SECONDS
  # No bridge, no iptables rules, no ip_forward change: the host network is left as it is, and builds and
  # containers use --network=host.
  "$DOCKERD" --config-file "$WORK/daemon.json" --iptables=false --ip-forward=false --bridge=none \
    --storage-driver=overlay2 --data-root "$data" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
    -H "unix://$WORK/docker.sock" >"$WORK/dockerd.log" 2>&1 &
  DOCKERD_PID=$!
  export DOCKER_HOST="unix://$WORK/docker.sock"
  local _
  for _ in $(seq 1 "$DAEMON_WAIT"); do
    kill -0 "$DOCKERD_PID" 2>/dev/null || die "dockerd exited while starting"
    if timeout 10 "$DOCKER" version >/dev/null 2>&1; then
      log "private dockerd (pid $DOCKERD_PID) up in $((SECONDS - start)) s at $DOCKER_HOST"
      return 0
    fi
    sleep 1
  done
  die "dockerd did not answer within $DAEMON_WAIT s"
}

import_base() {
  local start=$SECONDS
  if [ "$PERSIST" = 1 ] && "$DOCKER" image inspect "$BASE_TAG" >/dev/null 2>&1 && [ "$REBUILD_BASE" = 0 ]; then
    log "base image $BASE_TAG already in the persistent data root"
    return 0
  fi
  bounded 300 --stdin "$BASE_TAR" "$DOCKER" import --change 'CMD ["bash"]' - "$BASE_TAG" >/dev/null
  log "imported $BASE_TAG in $((SECONDS - start)) s"
}

# --- 4. image ------------------------------------------------------------------------------------------------------
# The build context is the work tree's tracked and untracked-but-not-ignored files (so no .git), less build folders
# (build/, build-*/, as docker/Dockerfile.dockerignore), sent as a tar: that works with the classic builder, which
# would otherwise upload everything under the repo.
make_context() {
  local ctx=$WORK/context.tar
  if git -C "$REPO" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$REPO" ls-files -z --cached --others --exclude-standard \
      | while IFS= read -r -d '' f; do
          case "$f" in build/* | build-*/* | .cache/*) continue ;; esac
          [ -e "$REPO/$f" ] && printf '%s\0' "$f"
        done \
      | tar -C "$REPO" --null -T - -cf "$ctx"
  else
    tar -C "$REPO" --exclude=./build --exclude='./build-*' --exclude=./.git --exclude=./.cache -cf "$ctx" .
  fi
  echo "$ctx"
}

build_image() {
  local target=${1:-} tag=${2:-$IMAGE} ctx start=$SECONDS
  ctx=$(make_context)
  log "docker build ${target:+--target $target }-t $tag (context $(du -h "$ctx" | cut -f1), timeout $BUILD_TIMEOUT s)"
  bounded "$BUILD_TIMEOUT" --stdin "$ctx" "$DOCKER" build --force-rm --network=host --build-arg BASE_IMAGE="$BASE_TAG" \
    -f docker/Dockerfile ${target:+--target "$target"} -t "$tag" - \
    || die "docker build failed or timed out"
  log "built $tag in $((SECONDS - start)) s; size $("$DOCKER" image inspect -f '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }')"
}

# --- 5. run and talk to it ---------------------------------------------------------------------------------------
# A TCP port nobody listens on (IPv4 or IPv6), from the dynamic range.
free_port() {
  local p hex _
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    hex=$(printf '%04X' "$p")
    if ! awk -v h="$hex" 'FNR > 1 { split($2, a, ":"); if (a[length(a)] == h) found = 1 } END { exit !found }' \
        /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  die "no free port found"
}

run_cli() { # run_cli TIMEOUT ARGS...: the host's build of the CLI if there is a working one, else the image's
  local t=$1; shift
  if [ -n "$HOST_CLI" ]; then
    bounded "$t" "$HOST_CLI" --server="127.0.0.1:$PORT" "$@"
  else
    bounded "$t" "$DOCKER" exec "$CONTAINER" mlir-rl-cli --server="127.0.0.1:$PORT" "$@"
  fi
}

smoke_run() {
  PORT=$(free_port)
  HOST_CLI=""
  if [ -x "$REPO/build/bin/mlir-rl-cli" ] && ! ldd "$REPO/build/bin/mlir-rl-cli" 2>/dev/null | grep -q 'not found'; then
    HOST_CLI=$REPO/build/bin/mlir-rl-cli
  fi
  local start=$SECONDS
  CONTAINER=$("$DOCKER" run -d --network=host --name "mlir-rl-smoke-$PORT" "$IMAGE" --port="$PORT")
  log "container ${CONTAINER:0:12} serving on 127.0.0.1:$PORT; client: ${HOST_CLI:-mlir-rl-cli inside the container}"

  local deadline=$((SECONDS + SERVER_WAIT)) answered=0 health=""
  while [ $SECONDS -lt $deadline ]; do
    [ "$("$DOCKER" inspect -f '{{.State.Running}}' "$CONTAINER")" = true ] \
      || { "$DOCKER" logs --tail 40 "$CONTAINER" >&2 || true; die "the server container exited"; }
    if [ $answered = 0 ] && run_cli "$CLI_POLL_TIMEOUT" list >"$WORK/list.out" 2>&1; then
      answered=1
      log "server answered after $((SECONDS - start)) s; \`mlir-rl-cli list\` printed:"
      sed 's/^/    /' "$WORK/list.out" >&2
    fi
    health=$("$DOCKER" inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$CONTAINER")
    if [ $answered = 1 ] && [ "$health" = healthy ]; then break; fi
    sleep 2
  done
  if [ $answered = 0 ]; then
    "$DOCKER" logs --tail 40 "$CONTAINER" >&2 || true
    cat "$WORK/list.out" >&2 2>/dev/null || true
    die "the server did not answer \`list\` within $SERVER_WAIT s"
  fi
  [ "$health" = healthy ] || die "the container's HEALTHCHECK did not report healthy within $SERVER_WAIT s (status: ${health:-none})"
  log "HEALTHCHECK reports healthy after $((SECONDS - start)) s"

  local uid
  uid=$("$DOCKER" exec "$CONTAINER" id -u)
  [ "$uid" != 0 ] || die "the server runs as root in the container"
  log "server runs as uid $uid"

  start=$SECONDS
  run_cli "$EPISODE_TIMEOUT" episode --benchmark=benchmark://nn-ops/matmul_64x64x64_f32 --policy=random \
    >"$WORK/episode.out" 2>&1 || { cat "$WORK/episode.out" >&2; "$DOCKER" logs --tail 40 "$CONTAINER" >&2; die "random episode failed"; }
  log "random episode on matmul_64x64x64_f32 (JIT inside the container) took $((SECONDS - start)) s; last lines:"
  tail -n 5 "$WORK/episode.out" | sed 's/^/    /' >&2

  start=$SECONDS
  bounded 60 "$DOCKER" stop -t 20 "$CONTAINER" >/dev/null
  log "container stopped in $((SECONDS - start)) s, exit code $("$DOCKER" inspect -f '{{.State.ExitCode}}' "$CONTAINER")"
}

# Checks the runtime-base stage alone: the libraries the server links and the ones its JIT loads by path.
runtime_check() {
  local tag=mlir-rl:runtime-base
  build_image runtime-base "$tag"
  # shellcheck disable=SC2016 # the script runs in the container
  bounded 120 "$DOCKER" run --rm --network=none --entrypoint sh "$tag" -euc '
    for f in /usr/lib/llvm-19/lib/libMLIR.so.19.1 /usr/lib/llvm-19/lib/libmlir_c_runner_utils.so /usr/lib/llvm-19/lib/libomp.so; do
      test -e "$f" || { echo "missing $f"; exit 1; }
      if ldd "$f" | grep "not found"; then echo "unresolved libraries in $f"; exit 1; fi
    done
    for l in libgrpc++.so.1.51 libprotobuf.so.32 libspdlog.so.1.10 libabsl_synchronization.so.20220623 libtcmalloc_minimal.so.4; do
      ldconfig -p | grep -q "$l" || { echo "missing $l"; exit 1; }
    done
    id mlirrl
    echo "runtime-base: libraries present"' || die "runtime-base check failed"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mlir-rl-docker.XXXXXX")
[ ${#WORK} -le 60 ] || die "temporary directory path too long for the daemon's sockets: $WORK (set TMPDIR=/tmp)"
log "work dir $WORK"

ensure_packages
build_base
[ "$MODE" = base ] && exit 0
start_daemon
import_base
if [ "$MODE" = runtime ]; then
  runtime_check
  exit 0
fi
build_image
smoke_run
log "PASS: image $IMAGE built, served \`list\` and a random episode on 127.0.0.1:$PORT"
