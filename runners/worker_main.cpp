// mlir-rl-runner: an evaluation worker. Reads ExecRequest frames on stdin, answers ExecResult frames on stdout,
// one at a time, until stdin closes. Started and supervised by the server's WorkerPool; it dies with the server.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <dlfcn.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "mlir/IR/MLIRContext.h"

#include "runners/Evaluator.h"
#include "runners/Executor.h"
#include "runners/Sandbox.h"
#include "runners/WorkerProtocol.h"
#include "support/Affinity.h"
#include "support/Context.h"
#include "support/Version.h"

ABSL_FLAG(int, parent_pid, 0, "pid of the supervising server; the worker exits when it is gone");
ABSL_FLAG(std::string, cpus, "", "comma-separated CPUs to pin to (empty: no pinning)");
ABSL_FLAG(int64_t, memory_limit_mb, 0, "address-space limit in MiB (0: none)");
ABSL_FLAG(bool, sandbox, true,
          "serve from a sandbox: own unprivileged user (as root), own network namespace, system-call allow-list, "
          "no writable files (see runners/Sandbox.h)");
ABSL_FLAG(std::string, sandbox_user, "nobody", "the user a worker started as root runs as");
ABSL_FLAG(bool, sandbox_selftest, false,
          "enter the sandbox, try what it must refuse, print the outcome and exit (status 0 when all was refused)");

int main(int argc, char **argv) {
  mlir_rl::support::installVersionFlag("mlir-rl-runner");
  absl::ParseCommandLine(argc, argv);
  // Die with the server, even if it is SIGKILLed; and notice if it died before we got here.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  int parent = absl::GetFlag(FLAGS_parent_pid);
  if (parent != 0 && getppid() != parent) return 1;
  // Namespaces need a single-threaded process: first thing.
  mlir_rl::runners::SandboxReport sandbox;
  bool sandboxed = absl::GetFlag(FLAGS_sandbox) || absl::GetFlag(FLAGS_sandbox_selftest);
  if (sandboxed) mlir_rl::runners::dropPrivileges(absl::GetFlag(FLAGS_sandbox_user), parent, sandbox);
  if (absl::GetFlag(FLAGS_sandbox_selftest)) {
    mlir_rl::runners::restrict(absl::GetFlag(FLAGS_memory_limit_mb), sandbox);
    std::string probe = mlir_rl::runners::probeSandbox(parent);
    std::printf("sandbox: %s\n%s", sandbox.summary().c_str(), probe.c_str());
    // Every attempt refused, except the read that must stay allowed.
    bool escaped = false;
    for (absl::string_view line : absl::StrSplit(probe, '\n', absl::SkipEmpty()))
      escaped |= absl::EndsWith(line, "ALLOWED") != absl::StrContains(line, "must stay allowed");
    return escaped ? 3 : 0;
  }

  if (std::string cpus = absl::GetFlag(FLAGS_cpus); !cpus.empty()) {
    if (absl::Status pinned = mlir_rl::support::pinCallingThreadTo(cpus); !pinned.ok())
      std::fprintf(stderr, "mlir-rl-runner: --cpus: %s\n", std::string(pinned.message()).c_str());
  }
  // Frames go to a private copy of stdout; anything else printing to stdout lands on stderr instead.
  int responseFd = dup(1);
  dup2(2, 1);
  int requestFd = 0;

  std::unique_ptr<mlir::MLIRContext> ctx = mlir_rl::support::createContext();
  mlir_rl::runners::ReferenceCache references;
  mlir_rl::runners::CompileOptions options;
  options.exitOnAllocationFailure = true;
  // The JIT's libraries stay loaded (each kernel's engine would otherwise open them again), and the OpenMP runtime
  // starts now: it registers itself in /dev/shm, which the sandbox no longer allows.
  for (const std::string &lib : mlir_rl::runners::jitSharedLibraries())
    if (void *handle = dlopen(lib.c_str(), RTLD_NOW | RTLD_GLOBAL))
      if (auto maxThreads = reinterpret_cast<int (*)()>(dlsym(handle, "omp_get_max_threads"))) maxThreads();
  // Limits come after start-up (the context and libraries are mapped by now), so they bound what candidates do.
  if (sandboxed) {
    mlir_rl::runners::restrict(absl::GetFlag(FLAGS_memory_limit_mb), sandbox);
  } else if (int64_t mb = absl::GetFlag(FLAGS_memory_limit_mb); mb > 0 && mlir_rl::runners::kAddressSpaceLimitWorks) {
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
