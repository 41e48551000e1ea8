// A least-recently-used map bounded by a total cost (entries, or estimated bytes). Not thread-safe: its owners
// (EvaluationService, TransitionCache, the transform script pool) guard it with their own mutex.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <optional>
#include <unordered_map>
#include <utility>

namespace mlir_rl::support {

template <typename Key, typename Value, typename Hash = std::hash<Key>>
class LruCache {
 public:
  explicit LruCache(size_t budget) : budget_(budget) {}

  // The value of `key`, now the most recently used; null when absent.
  Value *find(const Key &key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return nullptr;
    order_.splice(order_.begin(), order_, it->second.position);
    return &it->second.value;
  }

  bool contains(const Key &key) const { return entries_.count(key) != 0; }

  // Removes `key` and hands its value over; nullopt when absent.
  std::optional<Value> take(const Key &key) {
    auto it = entries_.find(key);
    if (it == entries_.end()) return std::nullopt;
    std::optional<Value> value(std::move(it->second.value));
    cost_ -= it->second.cost;
    order_.erase(it->second.position);
    entries_.erase(it);
    return value;
  }

  // Adds `key` as the most recently used entry unless it is present or costs more than the whole budget (false
  // then), and evicts least recently used entries until the total cost fits the budget.
  bool insert(Key key, Value value, size_t cost = 1) {
    if (cost > budget_ || entries_.count(key)) return false;
    order_.push_front(key);
    entries_.emplace(std::move(key), Entry{std::move(value), cost, order_.begin()});
    cost_ += cost;
    evict();
    return true;
  }

  void setBudget(size_t budget) {
    budget_ = budget;
    evict();
  }

  size_t size() const { return entries_.size(); }
  size_t cost() const { return cost_; }
  uint64_t evictions() const { return evictions_; }

 private:
  struct Entry {
    Value value;
    size_t cost;
    typename std::list<Key>::iterator position;
  };

  void evict() {
    while (cost_ > budget_ && !order_.empty()) {
      auto it = entries_.find(order_.back());
      cost_ -= it->second.cost;
      entries_.erase(it);
      order_.pop_back();
      ++evictions_;
    }
  }

  size_t budget_;
  size_t cost_ = 0;
  uint64_t evictions_ = 0;
  std::list<Key> order_;  // most recently used first
  std::unordered_map<Key, Entry, Hash> entries_;
};

}  // namespace mlir_rl::support
