// mlir-rl-runner: an evaluation worker. Reads ExecRequest frames on stdin, answers ExecResult frames on stdout,
// one at a time, until stdin closes. Started and supervised by the server's WorkerPool; it dies with the server.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "mlir/IR/MLIRContext.h"

#include "runners/Executor.h"
#include "runners/WorkerProtocol.h"
#include "support/Affinity.h"
#include "support/Context.h"
#include "support/Version.h"

ABSL_FLAG(int, parent_pid, 0, "pid of the supervising server; the worker exits when it is gone");
ABSL_FLAG(std::string, cpus, "", "comma-separated CPUs to pin to (empty: no pinning)");
ABSL_FLAG(int64_t, memory_limit_mb, 0, "address-space limit in MiB (0: none)");

int main(int argc, char **argv) {
  mlir_rl::support::installVersionFlag("mlir-rl-runner");
  absl::ParseCommandLine(argc, argv);
  // Die with the server, even if it is SIGKILLed; and notice if it died before we got here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (int parent = absl::GetFlag(FLAGS_parent_pid); parent != 0 && getppid() != parent) return 1;

  if (std::string cpus = absl::GetFlag(FLAGS_cpus); !cpus.empty()) {
    std::string error;
    if (!mlir_rl::support::pinCallingThreadTo(cpus, error))
      std::fprintf(stderr, "mlir-rl-runner: --cpus: %s\n", error.c_str());
  }
  // Frames go to a private copy of stdout; anything else printing to stdout lands on stderr instead.
  int responseFd = dup(1);
  dup2(2, 1);
  int requestFd = 0;

  std::unique_ptr<mlir::MLIRContext> ctx = mlir_rl::support::createContext();
  mlir_rl::runners::ReferenceCache references;
  mlir_rl::runners::CompileOptions options;
  options.exitOnAllocationFailure = true;
  // The address-space limit comes after start-up (the context and libraries are mapped by now), so it bounds
  // what candidates allocate.
  if (int64_t mb = absl::GetFlag(FLAGS_memory_limit_mb); mb > 0) {
    rlimit limit{static_cast<rlim_t>(mb) << 20, static_cast<rlim_t>(mb) << 20};
    if (setrlimit(RLIMIT_AS, &limit) != 0) std::perror("mlir-rl-runner: setrlimit");
  }

  std::string frame;
  while (mlir_rl::runners::readFrame(requestFd, frame)) {
    mlir_rl::runners::ExecRequest request;
    mlir_rl::runners::ExecResult result;
    if (!mlir_rl::runners::decode(frame, request)) {
      result.failure = mlir_rl::runners::FailureKind::Internal;
      result.message = "malformed request frame";
    } else {
      result = mlir_rl::runners::executeHere(ctx.get(), references, request, options);
    }
    if (!mlir_rl::runners::writeFrame(responseFd, mlir_rl::runners::encode(result))) return 1;
  }
  return 0;
}
