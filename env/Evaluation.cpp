#include "env/Evaluation.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir_rl::env {

namespace {

// 128-bit key of a candidate: two independent 64-bit hashes of its IR text plus the measurement settings.
std::string candidateKey(mlir::ModuleOp module, const std::string &benchmark, uint64_t seed, int threads) {
  std::string ir;
  llvm::raw_string_ostream os(ir);
  module->print(os, mlir::OpPrintingFlags().elideLargeElementsAttrs(0).enableDebugInfo(false));
  os.flush();
  uint64_t fnv = 1469598103934665603ULL;
  for (unsigned char c : ir) fnv = (fnv ^ c) * 1099511628211ULL;
  size_t stdHash = std::hash<std::string>{}(ir);
  return absl::StrCat(benchmark, "|", seed, "|", threads, "|", ir.size(), "|", fnv, "|", stdHash);
}

std::string referenceKey(const Benchmark &b, uint64_t seed, int threads) {
  return absl::StrCat(b.info().uri, "|", seed, "|", threads);
}

}  // namespace

EvaluationService::EvaluationService(runners::TimingOptions timing, size_t cacheCapacity)
    : timing_(timing), cacheCapacity_(cacheCapacity) {}

std::shared_ptr<EvaluationService::ReferenceEntry> EvaluationService::referenceEntry(const std::string &key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto &entry = references_[key];
  if (!entry) entry = std::make_shared<ReferenceEntry>();
  return entry;
}

absl::StatusOr<std::shared_ptr<const EvaluationService::Reference>> EvaluationService::reference(
    const Benchmark &benchmark, uint64_t seed, int threads) {
  auto entry = referenceEntry(referenceKey(benchmark, seed, threads));
  std::lock_guard<std::mutex> lock(entry->mutex);  // one computation per key; others wait for it
  if (entry->done) {
    if (!entry->status.ok()) return entry->status;
    return entry->value;
  }
  entry->done = true;
  std::string error;
  runners::CompileOptions options;
  options.numThreads = threads;
  auto kernel = runners::Compiler::compile(benchmark.module(), options, error);
  if (!kernel) {
    entry->status = absl::InternalError(absl::StrCat("reference of ", benchmark.info().uri, ": ", error));
    return entry->status;
  }
  auto ref = std::make_shared<Reference>();
  ref->inputs = runners::makeInputs(kernel->signature(), seed);
  if (!kernel->run(ref->inputs, ref->outputs, error)) {
    entry->status = absl::InternalError(absl::StrCat("reference of ", benchmark.info().uri, ": ", error));
    return entry->status;
  }
  ref->timing = kernel->time(ref->inputs, timing_);
  ref->lowerMs = kernel->lowerMs();
  ref->jitMs = kernel->jitMs();
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
  std::string key = candidateKey(candidate, benchmark.info().uri, seed, threads);
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
    return record;  // not cached: the reference problem is the server's, not the candidate's
  }
  record.referenceNs = (*ref)->timing.medianNs;
  std::string error;
  runners::CompileOptions options;
  options.numThreads = threads;
  auto kernel = runners::Compiler::compile(candidate, options, error);
  if (!kernel) {
    record.failure = "compilation failed: " + error;
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.compileFailures;
  } else {
    record.lowerMs = kernel->lowerMs();
    record.jitMs = kernel->jitMs();
    std::vector<runners::Buffer> outputs;
    if (!kernel->run((*ref)->inputs, outputs, error)) {
      record.failure = "execution failed: " + error;
    } else if (outputs.size() != (*ref)->outputs.size()) {
      record.failure = "wrong result: the candidate returns a different number of outputs";
    } else {
      record.correct = true;
      for (size_t i = 0; i < outputs.size(); ++i) {
        runners::Comparison c = runners::compareBuffers(outputs[i], (*ref)->outputs[i]);
        record.maxAbsError = std::max(record.maxAbsError, c.maxAbsError);
        if (!c.equal && record.correct) {
          record.correct = false;
          record.failure = absl::StrCat("wrong result: output ", i, " ", c.detail);
        }
      }
      if (record.correct) {
        record.timing = kernel->time((*ref)->inputs, timing_);
        record.speedup = record.timing.medianNs > 0 ? record.referenceNs / record.timing.medianNs : 0;
        record.ok = true;
      } else {
        std::lock_guard<std::mutex> lock(mutex_);
        ++stats_.wrongResults;
      }
    }
  }
  std::lock_guard<std::mutex> lock(mutex_);
  if (cache_.count(key) == 0) {
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
