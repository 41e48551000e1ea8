#include "server/SessionRegistry.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mlir_rl::server {

SessionRegistry::SessionRegistry(size_t maxSessions) : maxSessions_(maxSessions), rng_(std::random_device{}()) {}

std::string SessionRegistry::newId() {
  // Unguessable enough to keep clients from stepping on each other's sessions by accident, unique by the counter.
  // One generator per registry, seeded once (called under the map lock): seeding per RPC thread cost a cpuid trap
  // (std::random_device) on every thread gRPC started.
  return absl::StrFormat("%016x%08x", rng_(), static_cast<uint32_t>(++counter_));
}

absl::StatusOr<std::string> SessionRegistry::add(std::unique_ptr<env::Session> session, ObservationLog log) {
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (sessions_.size() >= maxSessions_)
    return absl::ResourceExhaustedError(
        absl::StrCat("the server holds its maximum of ", maxSessions_, " sessions: close some first"));
  std::string id = newId();
  auto slot = std::make_shared<SessionSlot>();
  slot->session = std::move(session);
  slot->log = std::move(log);
  sessions_.emplace(id, std::move(slot));
  return id;
}

absl::StatusOr<std::shared_ptr<SessionSlot>> SessionRegistry::find(const std::string &id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end())
    return absl::NotFoundError(absl::StrCat("unknown session '", id, "' (never created, or closed)"));
  return it->second;
}

absl::Status SessionRegistry::remove(const std::string &id) {
  std::shared_ptr<SessionSlot> slot;
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end())
      return absl::NotFoundError(absl::StrCat("unknown session '", id, "' (never created, or closed)"));
    slot = std::move(it->second);
    sessions_.erase(it);
  }
  // Wait for a step in flight on this session, then free it outside the map lock.
  std::lock_guard<std::mutex> lock(slot->mutex);
  slot->session.reset();
  return absl::OkStatus();
}

size_t SessionRegistry::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return sessions_.size();
}

}  // namespace mlir_rl::server
