// Turns candidate modules into trustworthy measurements: reference times per (benchmark, seed, threads) measured
// once, every candidate's output checked against the reference's by the executor (in-process or a worker), a
// time-out per evaluation, and a cache keyed by the hash of the candidate's IR so an already-measured candidate
// costs neither compile nor run.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "llvm/Support/JSON.h"
#include "mlir/IR/BuiltinOps.h"

#include "env/Benchmark.h"
#include "runners/Evaluator.h"
#include "runners/Executor.h"
#include "support/LruCache.h"

namespace mlir_rl::env {

struct EvaluationRecord {
  // Not OK when no evaluation took place for reasons that are not the candidate's (the server is shutting down, the
  // caller's deadline passed, a worker was killed from outside twice, the benchmark's own reference fails): the
  // step that asked for it must be undone and this status returned. The fields below are then meaningless.
  absl::Status error;
  bool ok = false;      // compiled, ran, and matched the reference
  std::string failure;  // why not, when !ok
  runners::FailureKind failureKind = runners::FailureKind::None;
  runners::Timing timing;
  double referenceNs = 0;
  double speedup = 0;
  bool correct = false;
  double maxAbsError = 0;
  double lowerMs = 0, jitMs = 0;
  bool cached = false;
};

struct EvaluationStats {
  int64_t evaluations = 0, cacheHits = 0, compileFailures = 0, wrongResults = 0, crashes = 0, timeouts = 0;
  int64_t outOfMemory = 0, retries = 0, notEvaluated = 0, cacheEntries = 0, references = 0, brokenReferences = 0;
};

// How one evaluation may be served.
struct EvaluateOptions {
  runners::Deadline callerDeadline = runners::Deadline::max();  // the caller stops waiting here
  bool readCache = true;   // false: measure again even when the candidate was measured
  bool writeCache = true;  // false: the result is not kept (with readCache, a measured result is still replaced)
};

// Time-out of one evaluation: clamp(floor + multiple x reference time, floor, ceiling). The reference itself gets
// the ceiling.
struct TimeoutPolicy {
  double floorSeconds = 30;
  double multiple = 20;
  double ceilingSeconds = 600;
  double forReference(double referenceNs) const;
};

// The text of a candidate as evaluation keys its cache and sends it to the executor (no debug locations).
std::string candidateText(mlir::ModuleOp candidate);

class EvaluationService {
 public:
  EvaluationService(runners::Executor *executor, runners::TimingOptions timing = {}, size_t cacheCapacity = 4096,
                    TimeoutPolicy timeouts = {});

  // The untransformed benchmark's time for (seed, threads), measured by the executor with the same method as
  // candidates. Computed on first use, then shared.
  struct Reference {
    runners::Timing timing;
    double lowerMs = 0, jitMs = 0;
  };
  // A reference that fails reproducibly (times out, crashes, runs out of memory, does not compile) is remembered:
  // FAILED_PRECONDITION from then on, so a broken upload does not hold a worker for its whole time-out at every
  // episode. Failures that are not the benchmark's (a worker killed from outside, shutdown) are not remembered.
  absl::StatusOr<std::shared_ptr<const Reference>> reference(
      const Benchmark &benchmark, uint64_t seed, int threads,
      runners::Deadline callerDeadline = runners::Deadline::max());

  // The reference time if it was already measured (never measures).
  bool knownReference(const Benchmark &benchmark, uint64_t seed, int threads, runners::Timing &timing);

  EvaluationRecord evaluate(const Benchmark &benchmark, mlir::ModuleOp candidate, uint64_t seed, int threads,
                            const EvaluateOptions &options = {});
  // The same for a candidate already printed with candidateText(). A worker killed or stopped from outside is not
  // the candidate's fault: the evaluation is retried once on a fresh worker, and only reproducible results are cached.
  EvaluationRecord evaluate(const Benchmark &benchmark, const std::string &candidateIR, uint64_t seed, int threads,
                            const EvaluateOptions &options = {});

  EvaluationStats stats() const;

  // Keeps reference times and candidate results across restarts in `directory`: one file per machine identity (CPU
  // model, core count, vector width, so results from another machine are never reused), JSON lines after a header
  // naming the format, its version and the machine (keys from xxh3-128 digests, stable across builds). Loads what is
  // there and appends every new measurement. An error when the directory cannot be created or the file opened, or
  // the file is of another format version (FAILED_PRECONDITION saying so).
  absl::Status persistTo(const std::string &directory, const std::string &machineIdentity);

 private:
  void persist(const llvm::json::Value &line);
  std::shared_ptr<const Reference> persistedReference(const Benchmark &benchmark, uint64_t seed, int threads);
  absl::Status loadPersisted(const std::string &path, const std::string &machineIdentity);
  struct ReferenceEntry {
    std::mutex mutex;
    std::shared_ptr<const Reference> value;
    absl::Status failure;  // a reproducible failure of the reference (not OK: remembered)
  };
  // Runs the request, retrying once on a fresh worker when the failure came from outside the candidate.
  runners::ExecResult execute(const runners::ExecRequest &request);
  // Measures a candidate (the reference first, when unknown) and caches the result as `options` say.
  EvaluationRecord measure(const Benchmark &benchmark, const std::string &ir, const std::string &key, uint64_t seed,
                           int threads, const EvaluateOptions &options);
  // A measurement in progress, which other callers of the same candidate wait for.
  struct InFlight {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    EvaluationRecord record;
  };
  std::map<std::string, std::shared_ptr<InFlight>> inFlight_;  // by candidate key, under mutex_
  std::shared_ptr<ReferenceEntry> referenceEntry(const std::string &key);

  runners::Executor *executor_;
  runners::TimingOptions timing_;
  TimeoutPolicy timeouts_;
  mutable std::mutex mutex_;
  std::map<std::string, std::shared_ptr<ReferenceEntry>> references_;
  support::LruCache<std::string, EvaluationRecord> cache_;  // candidate results by candidateKey (cost: 1 per entry)
  EvaluationStats stats_;
  // Reference times read from disk: key -> (digest of the benchmark text measured, timing).
  std::map<std::string, std::pair<std::string, std::shared_ptr<const Reference>>> pendingReferences_;
  std::mutex fileMutex_;
  std::unique_ptr<std::ofstream> file_;
};

}  // namespace mlir_rl::env
