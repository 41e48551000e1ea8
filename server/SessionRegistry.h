// Sessions by id. The map has its own lock (held only to find, insert or erase); each session has its own mutex,
// so a step on one session never waits for another.
//
// Sessions are leased: one that no call has used for `idleTimeout` is closed (a trainer that crashed leaves its
// sessions behind), and its id is remembered for a while so that NOT_FOUND can say it expired. Each client (see
// server/Auth.h: the token's name, the certificate's name, or the peer's address) may hold at most
// `maxPerClient` sessions, so one client cannot lock the others out; when the server is full, the session idle
// longest makes room if it has been idle for `evictableAfter`.
#pragma once

#include <atomic>
#include <chrono>
#include <deque>
#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"

#include "env/Session.h"

namespace mlir_rl::server {

using Clock = std::chrono::steady_clock;

// What the session's client was last sent, for delta observations (ObservationRequest.since).
struct ObservationLog {
  uint64_t lastId = 0;                 // id of the last observation sent (0: none yet)
  std::vector<uint64_t> tensorHashes;  // hash of each tensor of that observation, in Session::observe() order
};

struct SessionSlot {
  std::mutex mutex;
  std::unique_ptr<env::Session> session;  // null once closed
  ObservationLog log;                     // guarded by mutex
  std::string client;                     // who created it (fixed)
  std::atomic<int64_t> lastUsedNs{0};     // Clock time of the last call that used it
  void touch() { lastUsedNs.store(Clock::now().time_since_epoch().count(), std::memory_order_relaxed); }
};

struct RegistryLimits {
  size_t maxSessions = 10000;
  size_t maxPerClient = 10000;
  Clock::duration idleTimeout = std::chrono::hours(1);       // 0: sessions never expire
  Clock::duration evictableAfter = std::chrono::minutes(1);  // at capacity, the longest idle one past this goes
};

struct RegistryStats {
  size_t sessions = 0, clients = 0;
  int64_t created = 0, closed = 0, expired = 0, evicted = 0, refusedFull = 0, refusedQuota = 0;
};

class SessionRegistry {
 public:
  explicit SessionRegistry(RegistryLimits limits);

  // RESOURCE_EXHAUSTED when the client holds its quota, or the server is full and no session is idle long enough
  // to make room.
  absl::StatusOr<std::string> add(std::unique_ptr<env::Session> session, const std::string &client,
                                  ObservationLog log = {});
  // NOT_FOUND naming the id when it is unknown, closed, or expired (saying so). Marks the session used.
  absl::StatusOr<std::shared_ptr<SessionSlot>> find(const std::string &id) const;
  absl::Status remove(const std::string &id);
  // Closes the sessions no call has used for the idle timeout and that no call holds now; returns how many.
  size_t expireIdle();
  size_t size() const;
  RegistryStats stats() const;
  const RegistryLimits &limits() const { return limits_; }

 private:
  enum class Gone { Expired, Evicted };
  std::string newId();  // under mutex_ (exclusive)
  // Erases `it` (under mutex_, exclusive) and remembers why; the slot is freed by the caller outside the lock.
  std::shared_ptr<SessionSlot> eraseLocked(std::unordered_map<std::string, std::shared_ptr<SessionSlot>>::iterator it,
                                           std::optional<Gone> why);
  std::string notFound(const std::string &id) const;  // under mutex_ (shared)

  RegistryLimits limits_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<SessionSlot>> sessions_;
  absl::flat_hash_map<std::string, size_t> perClient_;
  // Ids that expired or were evicted, oldest first, bounded: NOT_FOUND says what happened to them.
  absl::flat_hash_map<std::string, Gone> gone_;
  std::deque<std::string> goneOrder_;
  RegistryStats stats_;
  uint64_t counter_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace mlir_rl::server
