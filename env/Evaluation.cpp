#include "env/Evaluation.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir_rl::env {

namespace {

std::string printIR(mlir::ModuleOp module) {
  std::string ir;
  llvm::raw_string_ostream os(ir);
  module->print(os, mlir::OpPrintingFlags().enableDebugInfo(false));
  os.flush();
  return ir;
}

// 128-bit key of a candidate: two independent 64-bit hashes of its IR text plus the measurement settings.
std::string candidateKey(const std::string &ir, const std::string &benchmark, uint64_t seed, int threads) {
  uint64_t fnv = 1469598103934665603ULL;
  for (unsigned char c : ir) fnv = (fnv ^ c) * 1099511628211ULL;
  size_t stdHash = std::hash<std::string>{}(ir);
  return absl::StrCat(benchmark, "|", seed, "|", threads, "|", ir.size(), "|", fnv, "|", stdHash);
}

std::string referenceKey(const Benchmark &b, uint64_t seed, int threads) {
  return absl::StrCat(b.info().uri, "|", seed, "|", threads);
}

}  // namespace

double TimeoutPolicy::forReference(double referenceNs) const {
  return std::clamp(floorSeconds + multiple * referenceNs * 1e-9, floorSeconds, ceilingSeconds);
}

EvaluationService::EvaluationService(runners::Executor *executor, runners::TimingOptions timing,
                                     size_t cacheCapacity, TimeoutPolicy timeouts)
    : executor_(executor), timing_(timing), cacheCapacity_(cacheCapacity), timeouts_(timeouts) {}

std::shared_ptr<EvaluationService::ReferenceEntry> EvaluationService::referenceEntry(const std::string &key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto &entry = references_[key];
  if (!entry) entry = std::make_shared<ReferenceEntry>();
  return entry;
}

absl::StatusOr<std::shared_ptr<const EvaluationService::Reference>> EvaluationService::reference(
    const Benchmark &benchmark, uint64_t seed, int threads) {
  auto entry = referenceEntry(referenceKey(benchmark, seed, threads));
  std::lock_guard<std::mutex> lock(entry->mutex);  // one measurement per key; others wait for it
  if (entry->value) return entry->value;
  runners::ExecRequest request;
  request.candidateIR = benchmark.taggedText();
  request.referenceIR = benchmark.taggedText();
  request.seed = seed;
  request.numThreads = threads;
  request.timing = timing_;
  request.timeoutSeconds = timeouts_.ceilingSeconds;
  runners::ExecResult result = executor_->execute(request);
  if (!result.ok()) {
    // Not remembered: the failure may be transient (a worker killed from outside); the next step tries again.
    return absl::InternalError(absl::StrCat("reference of ", benchmark.info().uri, ": ",
                                            runners::failureKindName(result.failure), ": ", result.message));
  }
  auto ref = std::make_shared<Reference>();
  ref->timing = result.timing;
  ref->lowerMs = result.lowerMs;
  ref->jitMs = result.jitMs;
  entry->value = ref;
  return entry->value;
}

bool EvaluationService::knownReference(const Benchmark &benchmark, uint64_t seed, int threads,
                                       runners::Timing &timing) {
  std::shared_ptr<ReferenceEntry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = references_.find(referenceKey(benchmark, seed, threads));
    if (it == references_.end()) return false;
    entry = it->second;
  }
  std::unique_lock<std::mutex> lock(entry->mutex, std::try_to_lock);
  if (!lock.owns_lock() || !entry->value) return false;
  timing = entry->value->timing;
  return true;
}

EvaluationRecord EvaluationService::evaluate(const Benchmark &benchmark, mlir::ModuleOp candidate, uint64_t seed,
                                             int threads) {
  std::string ir = printIR(candidate);
  std::string key = candidateKey(ir, benchmark.info().uri, seed, threads);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.evaluations;
    auto it = cache_.find(key);
    if (it != cache_.end()) {
      ++stats_.cacheHits;
      lru_.splice(lru_.begin(), lru_, it->second.second);
      EvaluationRecord hit = it->second.first;
      hit.cached = true;
      return hit;
    }
  }
  EvaluationRecord record;
  auto ref = reference(benchmark, seed, threads);
  if (!ref.ok()) {
    record.failure = std::string(ref.status().message());
    record.failureKind = runners::FailureKind::Internal;
    return record;  // not cached: the reference problem is the benchmark's, not the candidate's
  }
  record.referenceNs = (*ref)->timing.medianNs;
  runners::ExecRequest request;
  request.candidateIR = std::move(ir);
  request.referenceIR = benchmark.taggedText();
  request.seed = seed;
  request.numThreads = threads;
  request.timing = timing_;
  request.timeoutSeconds = timeouts_.forReference(record.referenceNs);
  runners::ExecResult result = executor_->execute(request);
  record.failureKind = result.failure;
  record.correct = result.correct;
  record.maxAbsError = result.maxAbsError;
  record.lowerMs = result.lowerMs;
  record.jitMs = result.jitMs;
  if (result.ok()) {
    record.ok = true;
    record.timing = result.timing;
    record.speedup = record.timing.medianNs > 0 ? record.referenceNs / record.timing.medianNs : 0;
  } else {
    record.failure = result.message;
  }
  std::lock_guard<std::mutex> lock(mutex_);
  switch (result.failure) {
    case runners::FailureKind::Compile: ++stats_.compileFailures; break;
    case runners::FailureKind::WrongResult: ++stats_.wrongResults; break;
    case runners::FailureKind::Crash:
    case runners::FailureKind::OutOfMemory: ++stats_.crashes; break;
    case runners::FailureKind::Timeout: ++stats_.timeouts; break;
    default: break;
  }
  // Internal failures (e.g. the worker pool shutting down) say nothing about the candidate: do not cache them.
  if (result.failure != runners::FailureKind::Internal && cache_.count(key) == 0) {
    lru_.push_front(key);
    cache_.emplace(key, std::make_pair(record, lru_.begin()));
    while (cache_.size() > cacheCapacity_) {
      cache_.erase(lru_.back());
      lru_.pop_back();
    }
  }
  return record;
}

EvaluationStats EvaluationService::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace mlir_rl::env
