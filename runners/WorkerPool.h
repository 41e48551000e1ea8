// WorkerPool: evaluations in supervised `mlir-rl-runner` processes.
//
// A candidate that segfaults, aborts, loops forever or exhausts memory kills only its worker: the request returns
// Crash / Timeout / OutOfMemory with the reason, the worker is replaced on next use, and everything else carries
// on. Workers are pinned to disjoint CPU sets (measurements never share a core), limited in address space, and die
// with the server even when it is SIGKILLed (PR_SET_PDEATHSIG, set against a spawner thread that lives as long as
// the pool).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <sys/types.h>

#include "absl/status/status.h"

#include "runners/Executor.h"
#include "support/UniqueFd.h"

namespace mlir_rl::runners {

struct WorkerPoolOptions {
  std::string runnerPath;  // the mlir-rl-runner executable
  int workers = 1;
  int cpusPerWorker = 1;  // worker i is pinned to CPUs [i*c, (i+1)*c) (modulo the CPUs this process may use)
  bool pin = true;
  int64_t memoryLimitMb = 8192;        // RLIMIT_AS of each worker (0: none)
  std::vector<std::string> extraArgs;  // passed to every mlir-rl-runner (e.g. sandbox settings)
};

struct WorkerPoolStats {
  int64_t requests = 0, crashes = 0, timeouts = 0, outOfMemory = 0, spawns = 0;
  int64_t external = 0;    // workers killed or stopped from outside, or abandoned at the caller's deadline
  int busy = 0, live = 0;  // workers evaluating now / started (gauges)
};

// What `mlir-rl-runner --sandbox_selftest` reported: its sandbox, and whether it refused every forbidden attempt.
struct SandboxCheck {
  bool contained = false;
  std::string output;
};

class WorkerPool : public Executor {
 public:
  explicit WorkerPool(WorkerPoolOptions options);
  ~WorkerPool() override;
  ExecResult execute(const ExecRequest &request) override;
  // Kills every worker and refuses new requests: evaluations in flight return FailureKind::Internal (not
  // interrupted as Cancelled, never cached). For shutdown, once the grace period is over.
  void cancelAll(const std::string &reason) override;
  WorkerPoolStats stats() const;
  std::vector<pid_t> workerPids() const;  // live workers (for tests)

  // The mlir-rl-runner next to the running executable.
  static std::string defaultRunnerPath();
  // Starts a worker with the pool's settings in self-test mode (runners/Sandbox.h) and reports what it could do.
  SandboxCheck checkSandbox() const;

 private:
  struct Worker {
    int index = 0;
    pid_t pid = 0;  // under mutex_ (the exchanging thread owns the worker, cancelAll may kill it)
    support::UniqueFd requestFd, responseFd, stderrFd;  // our ends; request and response are non-blocking
    std::string stderrTail;
    std::vector<int> cpus;
    bool busy = false;
  };
  // How an exchange with a worker ended when it did not bring an answer.
  enum class Ending { Died, Deadline, CallerDeadline };
  absl::Status spawn(Worker &w);  // runs on the spawner thread
  // After a failed exchange: kill (unless it died), wait, classify into `result`.
  void reap(Worker &w, Ending ending, const ExecRequest &request, ExecResult &result);
  void drainStderr(Worker &w);
  bool runOnSpawner(const std::function<void()> &task);

  WorkerPoolOptions options_;
  mutable std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Worker>> workers_;
  WorkerPoolStats stats_;
  std::atomic<bool> cancelled_{false};
  std::string cancelReason_;  // under mutex_

  // Spawner thread: workers' parent-death signal follows the thread that created them.
  std::mutex spawnMutex_;
  std::condition_variable spawnCv_;
  std::deque<std::function<void()>> spawnQueue_;
  bool stopping_ = false;
  std::thread spawner_;
};

}  // namespace mlir_rl::runners
