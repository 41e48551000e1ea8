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
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/raw_ostream.h"
#include "llvm/Support/xxhash.h"
#include "support/Status.h"

namespace mlir_rl::env {

namespace {

// A stable digest of a text (xxh3-128: the same on every machine and library version, unlike std::hash), in hex.
std::string digest(const std::string &text) {
  llvm::XXH128_hash_t h =
      llvm::xxh3_128bits(llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(text.data()), text.size()));
  return absl::StrCat(absl::Hex(h.high64, absl::kZeroPad16), absl::Hex(h.low64, absl::kZeroPad16));
}

// The key of a candidate: its IR text's digest and size, and the measurement settings.
std::string candidateKey(const std::string &ir, const std::string &benchmark, uint64_t seed, int threads) {
  return absl::StrCat(benchmark, "|", seed, "|", threads, "|", ir.size(), "|", digest(ir));
}

// The on-disk format (persistTo): JSON lines, the first a header naming the format, its version and the machine.
constexpr const char kFormat[] = "mlir-rl evaluation cache";
constexpr int64_t kFormatVersion = 2;

llvm::json::Object timingJson(const runners::Timing &t) {
  return llvm::json::Object{{"median_ns", t.medianNs},
                            {"min_ns", t.minNs},
                            {"spread", t.spread},
                            {"repetitions", t.repetitions},
                            {"raced", t.raced}};
}

std::optional<runners::Timing> timingOf(const llvm::json::Object &o) {
  auto median = o.getNumber("median_ns"), min = o.getNumber("min_ns"), spread = o.getNumber("spread");
  auto reps = o.getInteger("repetitions");
  if (!median || !min || !spread || !reps) return std::nullopt;
  return runners::Timing{*median, *min, *spread, static_cast<int>(*reps), o.getBoolean("raced").value_or(false)};
}

std::string referenceKey(const Benchmark &b, uint64_t seed, int threads) {
  return absl::StrCat(b.info().uri, "|", seed, "|", threads);
}

// The status of an evaluation that did not finish for reasons not the candidate's; the step that asked for it is
// undone. ABORTED (a worker killed or stopped from outside twice): nothing was applied, retrying the same step is
// right. UNAVAILABLE: the server is shutting down (go elsewhere). DEADLINE_EXCEEDED: the caller's deadline passed.
absl::Status interruptionStatus(const runners::ExecResult &result, const std::string &message) {
  using Why = runners::ExecResult::Interruption;
  switch (result.interruption) {
    case Why::External: return absl::AbortedError(absl::StrCat(message, "; the step was not applied: retry it"));
    case Why::CallerDeadline: return absl::DeadlineExceededError(message);
    case Why::Cancelled:
    case Why::None: break;
  }
  return absl::UnavailableError(message);
}

}  // namespace

double TimeoutPolicy::forReference(double referenceNs) const {
  return std::clamp(floorSeconds + multiple * referenceNs * 1e-9, floorSeconds, ceilingSeconds);
}

EvaluationService::EvaluationService(runners::Executor *executor, runners::TimingOptions timing, size_t cacheCapacity,
                                     TimeoutPolicy timeouts)
    : executor_(executor), timing_(timing), timeouts_(timeouts), cache_(cacheCapacity) {}

std::shared_ptr<EvaluationService::ReferenceEntry> EvaluationService::referenceEntry(const std::string &key) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto &entry = references_[key];
  if (!entry) entry = std::make_shared<ReferenceEntry>();
  return entry;
}

runners::ExecResult EvaluationService::execute(const runners::ExecRequest &request) {
  runners::ExecResult result = executor_->execute(request);
  if (result.failure == runners::FailureKind::Internal &&
      result.interruption == runners::ExecResult::Interruption::External) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++stats_.retries;
    }
    result = executor_->execute(request);
  }
  return result;
}

absl::StatusOr<std::shared_ptr<const EvaluationService::Reference>> EvaluationService::reference(
    const Benchmark &benchmark, uint64_t seed, int threads, runners::Deadline callerDeadline) {
  auto entry = referenceEntry(referenceKey(benchmark, seed, threads));
  std::lock_guard<std::mutex> lock(entry->mutex);  // one measurement per key; others wait for it
  if (entry->value) return entry->value;
  if (!entry->failure.ok()) return entry->failure;
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
  request.callerDeadline = callerDeadline;
  runners::ExecResult result = execute(request);
  if (!result.ok()) {
    std::string message = absl::StrCat("the reference (untransformed ", benchmark.info().uri, ") ",
                                       runners::failureKindName(result.failure), ": ", result.message);
    if (result.failure == runners::FailureKind::Internal) return interruptionStatus(result, message);
    // The benchmark itself does not run: remember it.
    entry->failure = absl::FailedPreconditionError(message);
    std::lock_guard<std::mutex> statsLock(mutex_);
    ++stats_.brokenReferences;
    return entry->failure;
  }
  auto ref = std::make_shared<Reference>();
  ref->timing = result.timing;
  ref->lowerMs = result.lowerMs;
  ref->jitMs = result.jitMs;
  entry->value = ref;
  llvm::json::Object line{{"kind", "reference"},
                          {"key", referenceKey(benchmark, seed, threads)},
                          {"text", digest(benchmark.taggedText())},
                          {"timing", timingJson(ref->timing)},
                          {"lower_ms", ref->lowerMs},
                          {"jit_ms", ref->jitMs}};
  persist(llvm::json::Value(std::move(line)));
  return entry->value;
}

std::shared_ptr<const EvaluationService::Reference> EvaluationService::persistedReference(const Benchmark &benchmark,
                                                                                          uint64_t seed, int threads) {
  std::lock_guard<std::mutex> lock(mutex_);
  auto it = pendingReferences_.find(referenceKey(benchmark, seed, threads));
  if (it == pendingReferences_.end()) return nullptr;
  // Only when the benchmark's text is the one that was measured.
  if (it->second.first != digest(benchmark.taggedText())) return nullptr;
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
                                             int threads, const EvaluateOptions &options) {
  return evaluate(benchmark, candidateText(candidate), seed, threads, options);
}

EvaluationRecord EvaluationService::evaluate(const Benchmark &benchmark, const std::string &ir, uint64_t seed,
                                             int threads, const EvaluateOptions &options) {
  std::string key = candidateKey(ir, benchmark.info().uri, seed, threads);
  std::shared_ptr<InFlight> mine, theirs;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.evaluations;
    if (EvaluationRecord *found = options.readCache ? cache_.find(key) : nullptr) {
      ++stats_.cacheHits;
      EvaluationRecord hit = *found;
      hit.cached = true;
      return hit;
    }
    // The same candidate being measured for another session (sessions of one benchmark often reach the same
    // schedule at once): wait for that measurement instead of making another.
    auto [it, inserted] = inFlight_.try_emplace(key);
    if (inserted)
      it->second = mine = std::make_shared<InFlight>();
    else if (options.readCache)
      theirs = it->second;
  }
  if (theirs) {
    std::unique_lock<std::mutex> lock(theirs->mutex);
    bool finished = options.callerDeadline == runners::Deadline::max()
                        ? (theirs->finished.wait(lock, [&] { return theirs->done; }), true)
                        : theirs->finished.wait_until(lock, options.callerDeadline, [&] { return theirs->done; });
    if (finished && theirs->record.error.ok()) {
      std::lock_guard<std::mutex> statsLock(mutex_);
      ++stats_.cacheHits;
      EvaluationRecord shared = theirs->record;
      shared.cached = true;
      return shared;
    }
    // It did not take place (that caller's deadline, a worker killed twice...), or this caller cannot wait longer:
    // measure it here.
  }
  EvaluationRecord record = measure(benchmark, ir, key, seed, threads, options);
  if (mine) {
    {
      std::lock_guard<std::mutex> lock(mine->mutex);
      mine->record = record;
      mine->done = true;
    }
    mine->finished.notify_all();
    std::lock_guard<std::mutex> lock(mutex_);
    inFlight_.erase(key);
  }
  return record;
}

EvaluationRecord EvaluationService::measure(const Benchmark &benchmark, const std::string &ir, const std::string &key,
                                            uint64_t seed, int threads, const EvaluateOptions &options) {
  EvaluationRecord record;
  auto ref = reference(benchmark, seed, threads, options.callerDeadline);
  if (!ref.ok()) {
    record.error = ref.status();  // the benchmark's problem or a passing one, never the candidate's
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.notEvaluated;
    return record;
  }
  record.referenceNs = (*ref)->timing.medianNs;
  runners::ExecRequest request;
  request.candidateIR = ir;
  request.referenceIR = benchmark.taggedText();
  request.seed = seed;
  request.numThreads = threads;
  request.timing = timing_;
  if (request.timing.raceFactor > 0) request.timing.raceAgainstNs = record.referenceNs;
  request.timeoutSeconds = timeouts_.forReference(record.referenceNs);
  request.callerDeadline = options.callerDeadline;
  runners::ExecResult result = execute(request);
  if (result.failure == runners::FailureKind::Internal) {
    // Nothing about the candidate was learnt: not a reward, not cached.
    record.error = interruptionStatus(result, absl::StrCat("the candidate could not be evaluated: ", result.message));
    std::lock_guard<std::mutex> lock(mutex_);
    ++stats_.notEvaluated;
    return record;
  }
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
    case runners::FailureKind::Crash: ++stats_.crashes; break;
    case runners::FailureKind::OutOfMemory: ++stats_.outOfMemory; break;
    case runners::FailureKind::Timeout: ++stats_.timeouts; break;
    default: break;
  }
  bool replace = options.writeCache && (!options.readCache || !cache_.contains(key));
  if (replace) {
    if (record.ok)
      persist(llvm::json::Value(llvm::json::Object{{"kind", "candidate"},
                                                   {"key", key},
                                                   {"timing", timingJson(record.timing)},
                                                   {"lower_ms", record.lowerMs},
                                                   {"jit_ms", record.jitMs},
                                                   {"reference_ns", record.referenceNs},
                                                   {"max_abs_error", record.maxAbsError}}));
    cache_.take(key);  // a re-measurement replaces the earlier result
    cache_.insert(key, record);
  }
  return record;
}

absl::Status EvaluationService::persistTo(const std::string &directory, const std::string &machineIdentity) {
  std::error_code ec;
  std::filesystem::create_directories(directory, ec);
  if (ec)
    return absl::InvalidArgumentError(absl::StrCat("cannot create cache directory ", directory, ": ", ec.message()));
  std::string path = absl::StrCat(directory, "/evaluations-", digest(machineIdentity).substr(0, 16), ".jsonl");
  bool fresh = !std::filesystem::exists(path, ec);
  if (!fresh) MLIR_RL_RETURN_IF_ERROR(loadPersisted(path, machineIdentity));
  auto out = std::make_unique<std::ofstream>(path, std::ios::app);
  if (!*out) return absl::InvalidArgumentError(absl::StrCat("cannot open ", path, " for appending"));
  std::lock_guard<std::mutex> lock(fileMutex_);
  file_ = std::move(out);
  if (fresh)
    *file_ << llvm::formatv("{0}", llvm::json::Value(llvm::json::Object{
                                       {"format", kFormat}, {"version", kFormatVersion}, {"machine", machineIdentity}}))
                  .str()
           << '\n';
  file_->flush();
  return absl::OkStatus();
}

void EvaluationService::persist(const llvm::json::Value &line) {
  std::lock_guard<std::mutex> lock(fileMutex_);
  if (!file_) return;
  *file_ << llvm::formatv("{0}", line).str() << '\n';
  file_->flush();
}

absl::Status EvaluationService::loadPersisted(const std::string &path, const std::string &machineIdentity) {
  std::ifstream in(path);
  std::string line;
  if (!std::getline(in, line)) return absl::OkStatus();  // empty: written from scratch
  llvm::Expected<llvm::json::Value> header = llvm::json::parse(line);
  const llvm::json::Object *h = header ? header->getAsObject() : nullptr;
  if (!header) llvm::consumeError(header.takeError());
  if (!h || h->getString("format") != kFormat)
    return absl::FailedPreconditionError(absl::StrCat(path, " is not an mlir-rl evaluation cache (no header line)"));
  if (h->getInteger("version").value_or(0) != kFormatVersion)
    return absl::FailedPreconditionError(absl::StrCat(path, " is format version ", h->getInteger("version").value_or(0),
                                                      ", this server reads version ", kFormatVersion,
                                                      ": move it away, or give another --cache_dir"));
  if (h->getString("machine") != llvm::StringRef(machineIdentity))
    return absl::FailedPreconditionError(absl::StrCat(path, " was measured on another machine"));
  // A line that does not parse (e.g. cut short by a crash) or of an unknown kind is skipped.
  while (std::getline(in, line)) {
    llvm::Expected<llvm::json::Value> value = llvm::json::parse(line);
    if (!value) {
      llvm::consumeError(value.takeError());
      continue;
    }
    const llvm::json::Object *o = value->getAsObject();
    const llvm::json::Object *t = o ? o->getObject("timing") : nullptr;
    std::optional<runners::Timing> timing = t ? timingOf(*t) : std::nullopt;
    std::optional<llvm::StringRef> kind = o ? o->getString("kind") : std::nullopt,
                                   key = o ? o->getString("key") : std::nullopt;
    if (!timing || !kind || !key) continue;
    if (*kind == "reference") {
      std::optional<llvm::StringRef> text = o->getString("text");
      if (!text) continue;
      auto ref = std::make_shared<Reference>();
      ref->timing = *timing;
      ref->lowerMs = o->getNumber("lower_ms").value_or(0);
      ref->jitMs = o->getNumber("jit_ms").value_or(0);
      pendingReferences_[key->str()] = {text->str(), ref};
    } else if (*kind == "candidate") {
      EvaluationRecord r;
      r.ok = r.correct = true;
      r.timing = *timing;
      r.lowerMs = o->getNumber("lower_ms").value_or(0);
      r.jitMs = o->getNumber("jit_ms").value_or(0);
      r.referenceNs = o->getNumber("reference_ns").value_or(0);
      r.maxAbsError = o->getNumber("max_abs_error").value_or(0);
      r.speedup = r.timing.medianNs > 0 ? r.referenceNs / r.timing.medianNs : 0;
      std::lock_guard<std::mutex> lock(mutex_);
      cache_.take(key->str());
      cache_.insert(key->str(), r);  // later lines are newer: with a full cache the oldest go
    }
  }
  return absl::OkStatus();
}

EvaluationStats EvaluationService::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  EvaluationStats s = stats_;
  s.cacheEntries = static_cast<int64_t>(cache_.size());
  s.references = static_cast<int64_t>(references_.size());
  return s;
}

}  // namespace mlir_rl::env
