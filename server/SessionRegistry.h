// Sessions by id. The map has its own lock (held only to find, insert or erase); each session has its own mutex,
// so a step on one session never waits for another.
#pragma once

#include <memory>
#include <mutex>
#include <random>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/status/statusor.h"

#include "env/Session.h"

namespace mlir_rl::server {

// What the session's client was last sent, for delta observations (ObservationRequest.since).
struct ObservationLog {
  uint64_t lastId = 0;                  // id of the last observation sent (0: none yet)
  std::vector<uint64_t> tensorHashes;   // hash of each tensor of that observation, in Session::observe() order
};

struct SessionSlot {
  std::mutex mutex;
  std::unique_ptr<env::Session> session;  // null once closed
  ObservationLog log;                     // guarded by mutex
};

class SessionRegistry {
 public:
  explicit SessionRegistry(size_t maxSessions);

  // RESOURCE_EXHAUSTED when the server already holds maxSessions sessions.
  absl::StatusOr<std::string> add(std::unique_ptr<env::Session> session, ObservationLog log = {});
  // NOT_FOUND naming the id when it is unknown or closed.
  absl::StatusOr<std::shared_ptr<SessionSlot>> find(const std::string &id) const;
  absl::Status remove(const std::string &id);
  size_t size() const;

 private:
  std::string newId();  // under mutex_ (exclusive)
  size_t maxSessions_;
  mutable std::shared_mutex mutex_;
  std::unordered_map<std::string, std::shared_ptr<SessionSlot>> sessions_;
  uint64_t counter_ = 0;
  std::mt19937_64 rng_;
};

}  // namespace mlir_rl::server
