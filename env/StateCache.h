// Payload states shared by sessions, and the transitions between them.
//
// A session's module is an immutable PayloadState: a transformation never changes a state, it clones it and makes a
// new one (copy on write). Because a state is determined by its parent and the fragment applied to it, the cache
// remembers each transition (parent state, fragment text) -> child state or failure reason. A step that any session
// of this process already took - the first steps of every episode on a benchmark, a replay, a search revisiting a
// node - then costs a lookup instead of clone + transform + verify, and sessions at the same state share one module
// (forks and idle sessions cost no copy).
//
// States are only read once built, from any thread (walks, features, printing, cloning); nothing may mutate
// `module()`. The cache is bounded by an estimate of the IR it holds (least recently used transitions go first);
// a state stays alive as long as a session or a transition refers to it.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

#include "support/LruCache.h"

namespace mlir_rl::env {

class Benchmark;
struct OpFacts;

class PayloadState {
 public:
  // The benchmark's own module, not copied. The benchmark makes it once and keeps it; the state does not keep the
  // benchmark alive, so whoever holds a root state must hold its benchmark too (a session does). Its id is derived
  // from the benchmark text, so every session of the same benchmark starts from the same node of the transition
  // graph.
  static std::shared_ptr<const PayloadState> root(const Benchmark &benchmark);
  // A module made by a transformation; takes ownership.
  static std::shared_ptr<const PayloadState> derived(mlir::OwningOpRef<mlir::ModuleOp> module);

  uint64_t id() const { return id_; }
  mlir::ModuleOp module() const { return module_; }
  size_t numOps() const { return numOps_; }
  // The module printed (generic form off, as the runner parses it); computed once.
  const std::string &text() const;
  // What the state says about one op (env/OpFacts.h), memoized under `key` (the op's tag and the configuration
  // fields the facts depend on). `compute` runs outside the lock, so two sessions may both compute the same facts;
  // the first stored is kept and returned to both.
  std::shared_ptr<const OpFacts> facts(const std::string &key,
                                       const std::function<std::shared_ptr<const OpFacts>()> &compute) const;
  // Facts kept per state at most (ops times configurations); beyond that they are computed and not kept.
  static constexpr size_t kMaxFactsPerState = 64;

 private:
  PayloadState() = default;
  uint64_t id_ = 0;
  mlir::ModuleOp module_;
  mlir::OwningOpRef<mlir::ModuleOp> owned_;
  size_t numOps_ = 0;
  mutable std::once_flag printed_;
  mutable std::string text_;
  mutable std::mutex factsMutex_;
  mutable std::unordered_map<std::string, std::shared_ptr<const OpFacts>> facts_;
};

// What applying a fragment to a state gave: the new state, or the reason it failed.
struct Transition {
  std::shared_ptr<const PayloadState> state;  // null on failure
  std::string failure;
};

class TransitionCache {
 public:
  // `budgetBytes` bounds the estimated size of the IR held only by the cache (0: remember nothing).
  explicit TransitionCache(size_t budgetBytes);

  // The estimate of a state's heap cost: its ops (operation, operands, results, attribute dictionary), and one op's
  // facts (OpFacts: two ops' features with sparse access matrices, and a mask; ≈3.1 KB median, 3.3 KB at most over
  // the built-in benchmarks' first ops), since a state is usually observed for the op under one cursor.
  static constexpr size_t kBytesPerOp = 256;
  static constexpr size_t kFactsBytesPerState = 4 << 10;

  // The process-wide cache sessions use (budget set with setBudget, e.g. from a server flag).
  static TransitionCache &shared();
  void setBudget(size_t budgetBytes);

  std::optional<Transition> find(uint64_t parent, const std::string &fragment);
  void insert(uint64_t parent, const std::string &fragment, Transition transition);

  struct Stats {
    uint64_t hits = 0, misses = 0, evictions = 0;
    size_t entries = 0, bytes = 0;
  };
  Stats stats() const;

 private:
  struct Key {
    uint64_t parent;
    std::string fragment;
    bool operator==(const Key &o) const { return parent == o.parent && fragment == o.fragment; }
  };
  struct KeyHash {
    size_t operator()(const Key &k) const;
  };

  mutable std::mutex mutex_;
  support::LruCache<Key, Transition, KeyHash> entries_;  // cost: estimated bytes
  uint64_t hits_ = 0, misses_ = 0;
};

}  // namespace mlir_rl::env
