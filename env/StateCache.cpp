#include "env/StateCache.h"

#include <atomic>

#include "absl/hash/hash.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "env/OpFacts.h"

namespace mlir_rl::env {

namespace {

// Derived states are numbered; roots are named by a hash of their benchmark's text with the top bit set, so the two
// kinds never collide.
constexpr uint64_t kRootBit = uint64_t{1} << 63;

uint64_t textHash(const std::string &text) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a: stable across processes and runs
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ULL;
  return h;
}

size_t countOps(mlir::ModuleOp module) {
  size_t n = 0;
  module->walk([&](mlir::Operation *) { ++n; });
  return n;
}

}  // namespace

std::shared_ptr<const PayloadState> PayloadState::root(const Benchmark &benchmark) {
  // Made once and kept by the benchmark, so every session shares what is memoized in it (printed text, facts for
  // the first op's mask and observation) and a Reset hashes no text.
  std::lock_guard<std::mutex> lock(benchmark.rootMutex_);
  if (benchmark.root_) return benchmark.root_;
  std::shared_ptr<PayloadState> s(new PayloadState());
  s->id_ = kRootBit | textHash(benchmark.taggedText());
  s->module_ = benchmark.module();
  s->numOps_ = countOps(s->module_);
  benchmark.root_ = s;
  return s;
}

std::shared_ptr<const PayloadState> PayloadState::derived(mlir::OwningOpRef<mlir::ModuleOp> module) {
  static std::atomic<uint64_t> next{1};
  std::shared_ptr<PayloadState> s(new PayloadState());
  s->id_ = next.fetch_add(1, std::memory_order_relaxed);
  s->module_ = *module;
  s->owned_ = std::move(module);
  s->numOps_ = countOps(s->module_);
  return s;
}

const std::string &PayloadState::text() const {
  std::call_once(printed_, [this] { text_ = candidateText(module_); });
  return text_;
}

std::shared_ptr<const OpFacts> PayloadState::facts(
    const std::string &key, const std::function<std::shared_ptr<const OpFacts>()> &compute) const {
  {
    std::lock_guard<std::mutex> lock(factsMutex_);
    if (auto it = facts_.find(key); it != facts_.end()) return it->second;
  }
  std::shared_ptr<const OpFacts> made = compute();
  std::lock_guard<std::mutex> lock(factsMutex_);
  // Bounded: a benchmark's root lives as long as the benchmark, and clients choose configurations freely.
  if (facts_.size() >= kMaxFactsPerState && !facts_.count(key)) return made;
  return facts_.try_emplace(key, std::move(made)).first->second;
}

size_t TransitionCache::KeyHash::operator()(const Key &k) const { return absl::HashOf(k.parent, k.fragment); }

TransitionCache::TransitionCache(size_t budgetBytes) : entries_(budgetBytes) {}

TransitionCache &TransitionCache::shared() {
  // Never destroyed: its modules belong to an MLIRContext that static destruction may already have torn down.
  static TransitionCache *cache = new TransitionCache(256u << 20);
  return *cache;
}

void TransitionCache::setBudget(size_t budgetBytes) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.setBudget(budgetBytes);
}

std::optional<Transition> TransitionCache::find(uint64_t parent, const std::string &fragment) {
  std::lock_guard<std::mutex> lock(mutex_);
  Transition *found = entries_.find(Key{parent, fragment});
  ++(found ? hits_ : misses_);
  if (!found) return std::nullopt;
  return *found;
}

void TransitionCache::insert(uint64_t parent, const std::string &fragment, Transition transition) {
  size_t bytes = sizeof(Key) + sizeof(Transition) + 2 * fragment.size() + transition.failure.size() +
                 (transition.state ? transition.state->numOps() * kBytesPerOp + kFactsBytesPerState : 0);
  std::lock_guard<std::mutex> lock(mutex_);
  // Already present: another session got there first, with the same result.
  entries_.insert(Key{parent, fragment}, std::move(transition), bytes);
}

TransitionCache::Stats TransitionCache::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return Stats{hits_, misses_, entries_.evictions(), entries_.size(), entries_.cost()};
}

}  // namespace mlir_rl::env
