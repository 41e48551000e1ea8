#!/bin/sh
# The image's entry point: mlir-rl-server with the image's paths. It listens on every interface only with
# credentials: a tokens file (MLIR_RL_AUTH_TOKENS_FILE, e.g. a Docker or Kubernetes secret; lines "<name> <token>")
# makes it require `authorization: Bearer <token>` on 0.0.0.0. Without one it listens on 127.0.0.1 only (reachable
# from the host with host networking), so an image started with defaults never offers code execution to a network.
# Arguments are passed on (later flags win, e.g. --port=50052, or --address=... with your own credentials).
#
# Cores of its own, where the orchestrator gives none (Docker Swarm has CPU quotas but no cpusets): the server's
# evaluation workers pin themselves to the CPUs the process may use, one worker per CPU, so narrowing that set
# gives the replica whole cores of its own.
#   MLIR_RL_CPUSET=LIST         run on these CPUs (taskset list, e.g. "2-3")
#   MLIR_RL_REPLICA_SLOT=S      (1, 2, ...; in a Swarm stack: "{{.Task.Slot}}") with MLIR_RL_CPUS_PER_REPLICA=K
#                               (default 1): slot S takes the ((S-1) mod floor(N/K))-th group of K CPUs among the
#                               N the container may use, so replicas 1..floor(N/K) of one node never share a core.
set -eu
set -- --benchmarks_dir=/opt/mlir-rl/benchmarks --port_file=/var/lib/mlir-rl/port "$@"

cpus=${MLIR_RL_CPUSET:-}
if [ -z "$cpus" ] && [ -n "${MLIR_RL_REPLICA_SLOT:-}" ]; then
  # The CPUs this process may use, one per line, from a list such as "0-3,8,10-11".
  allowed=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status | tr ',' '\n' \
    | awk -F- '{ hi = ($2 == "") ? $1 : $2; for (c = $1; c <= hi; c++) print c }')
  cpus=$(printf '%s\n' "$allowed" | awk -v slot="$MLIR_RL_REPLICA_SLOT" -v k="${MLIR_RL_CPUS_PER_REPLICA:-1}" '
    { cpu[NR - 1] = $1 }
    END {
      if (slot !~ /^[0-9]+$/ || slot < 1 || k !~ /^[0-9]+$/ || k < 1) { print "bad" > "/dev/stderr"; exit 1 }
      groups = int(NR / k)
      if (groups < 1) { print "fewer CPUs than MLIR_RL_CPUS_PER_REPLICA" > "/dev/stderr"; exit 1 }
      g = (slot - 1) % groups; out = ""
      for (i = g * k; i < (g + 1) * k; i++) out = out (out == "" ? "" : ",") cpu[i]
      print out
    }') || { echo "entrypoint: cannot pick CPUs for slot '$MLIR_RL_REPLICA_SLOT'" >&2; exit 2; }
fi
pin=""
if [ -n "$cpus" ]; then
  echo "entrypoint: server on CPUs $cpus" >&2
  pin="taskset -c $cpus"
fi

if [ -n "${MLIR_RL_AUTH_TOKENS_FILE:-}" ]; then
  exec $pin /opt/mlir-rl/bin/mlir-rl-server --address=0.0.0.0 --auth_tokens_file="$MLIR_RL_AUTH_TOKENS_FILE" "$@"
fi
exec $pin /opt/mlir-rl/bin/mlir-rl-server --address=127.0.0.1 "$@"
