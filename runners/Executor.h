// Executors compile, run, check and time candidates. The environment asks an executor; where the work happens is
// the executor's business:
//   * InProcessExecutor — in the calling process (tests, tools; a crashing candidate takes the process with it);
//   * WorkerPool (WorkerPool.h) — in supervised `mlir-rl-runner` worker processes, the server's default.
// Requests carry IR as text so they can cross a process boundary unchanged.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

#include "runners/Buffers.h"
#include "runners/Evaluator.h"

namespace mlir {
class MLIRContext;
}

namespace mlir_rl::runners {

using Deadline = std::chrono::steady_clock::time_point;

struct ExecRequest {
  std::string candidateIR;  // the module to evaluate
  std::string referenceIR;  // the untransformed benchmark: its outputs on the same inputs are the truth
  uint64_t seed = 0;        // input data
  int numThreads = 1;       // OpenMP threads
  TimingOptions timing;
  bool time = true;           // false: compile, run and check only
  double timeoutSeconds = 0;  // whole request (0: no limit); enforced by executors that can (WorkerPool)
  // The caller stops waiting here (its RPC's deadline): the evaluation is abandoned, not reported as the
  // candidate's time-out. Enforced by executors that can (WorkerPool); not sent to workers.
  Deadline callerDeadline = Deadline::max();
};

enum class FailureKind { None, Compile, Crash, Timeout, OutOfMemory, WrongResult, Internal };
const char *failureKindName(FailureKind kind);

struct ExecResult {
  FailureKind failure = FailureKind::None;
  std::string message;  // what went wrong, for users
  // With FailureKind::Internal, why the evaluation did not finish; none of these says anything about the candidate
  // (never cached). External: its worker was killed or stopped from outside, and a retry on a fresh worker may
  // succeed. Cancelled: the executor is shutting down. CallerDeadline: the caller stopped waiting.
  enum class Interruption { None, External, Cancelled, CallerDeadline };
  Interruption interruption = Interruption::None;
  bool correct = false;
  double maxAbsError = 0;
  Timing timing;
  double lowerMs = 0, jitMs = 0;
  bool ok() const { return failure == FailureKind::None; }
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual ExecResult execute(const ExecRequest &request) = 0;
  // Stops evaluations in flight and refuses new ones, where the executor can (WorkerPool); for shutdown.
  virtual void cancelAll(const std::string &reason) {}
};

// Reference outputs per (reference IR, seed, threads), computed on first use in this process.
class ReferenceCache {
 public:
  struct Entry {
    std::vector<Buffer> inputs, outputs;
  };
  // The reference's inputs and outputs; an error when it does not parse or compile.
  absl::StatusOr<std::shared_ptr<const Entry>> get(mlir::MLIRContext *ctx, const std::string &referenceIR,
                                                   uint64_t seed, int numThreads);

 private:
  std::mutex mutex_;
  std::map<std::string, std::shared_ptr<const Entry>> entries_;
};

// Parses, compiles, runs, compares and times `request` in this process. Shared by InProcessExecutor and the
// worker's main loop. `options` picks OpenMP threads and allocation checking.
ExecResult executeHere(mlir::MLIRContext *ctx, ReferenceCache &references, const ExecRequest &request,
                       const CompileOptions &baseOptions);

class InProcessExecutor : public Executor {
 public:
  explicit InProcessExecutor(mlir::MLIRContext *ctx) : ctx_(ctx) {}
  ExecResult execute(const ExecRequest &request) override;

 private:
  mlir::MLIRContext *ctx_;
  ReferenceCache references_;
};

}  // namespace mlir_rl::runners
