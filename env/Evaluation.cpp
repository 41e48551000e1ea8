#include "env/Evaluation.h"

#include <algorithm>
#include <cmath>

#include <filesystem>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "llvm/Support/raw_ostream.h"

namespace mlir_rl::env {

namespace {


// 128-bit key of a candidate: two independent 64-bit hashes of its IR text plus the measurement settings.
std::string candidateKey(const std::string &ir, const std::string &benchmark, uint64_t seed, int threads) {
  uint64_t fnv = 1469598103934665603ULL;
  for (unsigned char c : ir) fnv = (fnv ^ c) * 1099511628211ULL;
  size_t stdHash = std::hash<std::string>{}(ir);
  return absl::StrCat(benchmark, "|", seed, "|", threads, "|", ir.size(), "|", fnv, "|", stdHash);
}

// Full precision, so a persisted measurement reads back exactly.
std::string num(double x) { return absl::StrFormat("%.17g", x); }

std::string referenceKey(const Benchmark &b, uint64_t seed, int threads) {
  return absl::StrCat(b.info().uri, "|", seed, "|", threads);
}

}  // namespace

double TimeoutPolicy::forReference(double referenceNs) const {
  return std::clamp(floorSeconds + multiple * referenceNs * 1e-9, floorSeconds, ceilingSeconds);
}

EvaluationService::EvaluationService(runners::Executor *executor, runners::TimingOptions timing,
                                     size_t cacheCapacity, TimeoutPolicy timeouts)
    : executor_(executor), timing_(timing), timeouts_(timeouts), cache_(cacheCapacity) {}

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
  if (auto persisted = persistedReference(benchmark, seed, threads)) {
    entry->value = persisted;
    return entry->value;
  }
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
  persist(absl::StrCat("R\t", referenceKey(benchmark, seed, threads), "|", benchmark.taggedText().size(), "|",
                       std::hash<std::string>{}(benchmark.taggedText()), "\t", num(ref->timing.medianNs), "\t",
                       num(ref->timing.minNs), "\t", num(ref->timing.spread), "\t", ref->timing.repetitions, "\t",
                       num(ref->lowerMs), "\t", num(ref->jitMs)));
  return entry->value;
}

std::shared_ptr<const EvaluationService::Reference> EvaluationService::persistedReference(const Benchmark &benchmark,
                                                                                       uint64_t seed, int threads) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = pendingReferences_.find(referenceKey(benchmark, seed, threads));
  if (it == pendingReferences_.end()) return nullptr;
  // Only when the benchmark's text is the one that was measured.
  std::string full = absl::StrCat(referenceKey(benchmark, seed, threads), "|", benchmark.taggedText().size(), "|",
                                  std::hash<std::string>{}(benchmark.taggedText()));
  if (it->second.first != full) return nullptr;
  return it->second.second;
}

bool EvaluationService::knownReference(const Benchmark &benchmark, uint64_t seed, int threads,
                                       runners::Timing &timing) {
  std::shared_ptr<ReferenceEntry> entry;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = references_.find(referenceKey(benchmark, seed, threads));
    if (it != references_.end()) entry = it->second;
  }
  if (!entry) {
    auto persisted = persistedReference(benchmark, seed, threads);
    if (persisted) timing = persisted->timing;
    return persisted != nullptr;
  }
  std::unique_lock<std::mutex> lock(entry->mutex, std::try_to_lock);
  if (!lock.owns_lock() || !entry->value) return false;
  timing = entry->value->timing;
  return true;
}

std::string candidateText(mlir::ModuleOp candidate) {
  std::string ir;
  llvm::raw_string_ostream os(ir);
  candidate->print(os, mlir::OpPrintingFlags().enableDebugInfo(false));
  os.flush();
  return ir;
}

EvaluationRecord EvaluationService::evaluate(const Benchmark &benchmark, mlir::ModuleOp candidate, uint64_t seed,
                                             int threads) {
  return evaluate(benchmark, candidateText(candidate), seed, threads);
}

EvaluationRecord EvaluationService::evaluate(const Benchmark &benchmark, const std::string &ir, uint64_t seed,
                                             int threads) {
  std::string key = candidateKey(ir, benchmark.info().uri, seed, threads);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.evaluations;
    if (EvaluationRecord *found = cache_.find(key)) {
      ++stats_.cacheHits;
      EvaluationRecord hit = *found;
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
  request.candidateIR = ir;
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
  if (result.failure != runners::FailureKind::Internal && !cache_.contains(key)) {
    if (record.ok)
      persist(absl::StrCat("C\t", key, "\t", num(record.timing.medianNs), "\t", num(record.timing.minNs), "\t",
                           num(record.timing.spread), "\t", record.timing.repetitions, "\t", num(record.lowerMs), "\t",
                           num(record.jitMs), "\t", num(record.referenceNs), "\t", num(record.maxAbsError)));
    cache_.insert(key, record);
  }
  return record;
}

absl::Status EvaluationService::persistTo(const std::string &directory, const std::string &machineIdentity) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec) return absl::InvalidArgumentError(absl::StrCat("cannot create cache directory ", directory, ": ", ec.message()));
  std::string path = absl::StrCat(directory, "/evaluations-", absl::Hex(std::hash<std::string>{}(machineIdentity)),
                                  ".tsv");
  loadPersisted(path);
  auto out = std::make_unique<std::ofstream>(path, std::ios::app);
  if (!*out) return absl::InvalidArgumentError(absl::StrCat("cannot open ", path, " for appending"));
  std::lock_guard<std::mutex> lock(fileMutex_);
  file_ = std::move(out);
  return absl::OkStatus();
}

void EvaluationService::persist(const std::string &line) {
  std::lock_guard<std::mutex> lock(fileMutex_);
  if (!file_) return;
  *file_ << line << '\n';
  file_->flush();
}

void EvaluationService::loadPersisted(const std::string &path) {
  std::ifstream in(path);
  std::string line;
  // Lines: R <reference key> <median> <min> <spread> <reps> <lower> <jit>
  //        C <candidate key> <median> <min> <spread> <reps> <lower> <jit> <reference> <max error>
  // A line that does not parse (e.g. cut short by a crash) is skipped.
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    std::vector<double> v;
    for (size_t i = 2; i < f.size(); ++i) {
      double x = 0;
      if (!absl::SimpleAtod(f[i], &x)) break;
      v.push_back(x);
    }
    if (f.size() == 8 && f[0] == "R" && v.size() == 6) {
      // The reference key in the file carries the benchmark text's size and hash; match on the prefix we use.
      std::string key = f[1].substr(0, f[1].rfind('|', f[1].rfind('|') - 1));
      auto ref = std::make_shared<Reference>();
      ref->timing = {v[0], v[1], v[2], static_cast<int>(v[3])};
      ref->lowerMs = v[4];
      ref->jitMs = v[5];
      pendingReferences_[key] = {f[1], ref};
    } else if (f.size() == 10 && f[0] == "C" && v.size() == 8) {
      EvaluationRecord r;
      r.ok = r.correct = true;
      r.timing = {v[0], v[1], v[2], static_cast<int>(v[3])};
      r.lowerMs = v[4];
      r.jitMs = v[5];
      r.referenceNs = v[6];
      r.maxAbsError = v[7];
      r.speedup = r.timing.medianNs > 0 ? r.referenceNs / r.timing.medianNs : 0;
      std::lock_guard<std::mutex> lock(mutex_);
      cache_.insert(f[1], r);  // later lines are newer: with a full cache the oldest go
    }
  }
}

EvaluationStats EvaluationService::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

}  // namespace mlir_rl::env
