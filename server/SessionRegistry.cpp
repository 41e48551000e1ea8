#include "server/SessionRegistry.h"

#include <optional>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace mlir_rl::server {

namespace {
constexpr size_t kRememberedGoneIds = 100000;

double seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }
}  // namespace

SessionRegistry::SessionRegistry(RegistryLimits limits) : limits_(limits), rng_(std::random_device{}()) {}

std::string SessionRegistry::newId() {
  // Unguessable enough to keep clients from stepping on each other's sessions by accident, unique by the counter.
  // One generator per registry, seeded once (called under the map lock): seeding per RPC thread cost a cpuid trap
  // (std::random_device) on every thread gRPC started.
  return absl::StrFormat("%016x%08x", rng_(), static_cast<uint32_t>(++counter_));
}

std::shared_ptr<SessionSlot> SessionRegistry::eraseLocked(
    std::unordered_map<std::string, std::shared_ptr<SessionSlot>>::iterator it, std::optional<Gone> why) {
  std::shared_ptr<SessionSlot> slot = std::move(it->second);
  if (auto client = perClient_.find(slot->client); client != perClient_.end() && --client->second == 0)
    perClient_.erase(client);
  if (why) {
    gone_[it->first] = *why;
    goneOrder_.push_back(it->first);
    while (goneOrder_.size() > kRememberedGoneIds) {
      gone_.erase(goneOrder_.front());
      goneOrder_.pop_front();
    }
  }
  sessions_.erase(it);
  return slot;
}

absl::StatusOr<std::string> SessionRegistry::add(std::unique_ptr<env::Session> session, const std::string &client,
                                                 ObservationLog log) {
  std::shared_ptr<SessionSlot> evicted;  // freed after the lock is released
  std::unique_lock<std::shared_mutex> lock(mutex_);
  if (sessions_.size() >= limits_.maxSessions) {
    // Make room with the session idle longest, if it has been idle long enough and no call holds it.
    int64_t now = Clock::now().time_since_epoch().count();
    auto oldest = sessions_.end();
    for (auto it = sessions_.begin(); it != sessions_.end(); ++it)
      if (oldest == sessions_.end() || it->second->lastUsedNs.load() < oldest->second->lastUsedNs.load()) oldest = it;
    bool evictable =
        oldest != sessions_.end() && Clock::duration(now - oldest->second->lastUsedNs.load()) >= limits_.evictableAfter;
    std::unique_lock<std::mutex> busy;
    if (evictable) busy = std::unique_lock<std::mutex>(oldest->second->mutex, std::try_to_lock);
    if (!evictable || !busy.owns_lock()) {
      ++stats_.refusedFull;
      return absl::ResourceExhaustedError(absl::StrCat("the server holds its maximum of ", limits_.maxSessions,
                                                       " sessions (--max_sessions) and none has been idle "
                                                       "for ",
                                                       seconds(limits_.evictableAfter),
                                                       " s: close some first, or try again later"));
    }
    busy.unlock();
    evicted = eraseLocked(oldest, Gone::Evicted);
    ++stats_.evicted;
  }
  auto held = perClient_.find(client);
  if (held != perClient_.end() && held->second >= limits_.maxPerClient) {
    ++stats_.refusedQuota;
    return absl::ResourceExhaustedError(
        absl::StrCat("client '", client, "' holds its maximum of ", limits_.maxPerClient,
                     " sessions (--max_sessions_per_client): close some (EndSession, or Reset with close_session_id)"));
  }
  std::string id = newId();
  auto slot = std::make_shared<SessionSlot>();
  slot->session = std::move(session);
  slot->log = std::move(log);
  slot->client = client;
  slot->touch();
  sessions_.emplace(id, std::move(slot));
  ++perClient_[client];
  ++stats_.created;
  lock.unlock();
  return id;
}

std::string SessionRegistry::notFound(const std::string &id) const {
  auto gone = gone_.find(id);
  if (gone == gone_.end()) return absl::StrCat("unknown session '", id, "' (never created, or closed)");
  if (gone->second == Gone::Expired)
    return absl::StrCat("session '", id, "' expired: no call used it for ", seconds(limits_.idleTimeout),
                        " s (--session_idle_timeout_s); start a new one (Reset, replay_actions restores an episode)");
  return absl::StrCat("session '", id,
                      "' was closed to make room for a new one: the server was full (--max_sessions) "
                      "and it had been idle longest; start a new one (Reset, replay_actions restores an episode)");
}

absl::StatusOr<std::shared_ptr<SessionSlot>> SessionRegistry::find(const std::string &id) const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  auto it = sessions_.find(id);
  if (it == sessions_.end()) return absl::NotFoundError(notFound(id));
  it->second->touch();
  return it->second;
}

absl::Status SessionRegistry::remove(const std::string &id) {
  std::shared_ptr<SessionSlot> slot;
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    auto it = sessions_.find(id);
    if (it == sessions_.end()) return absl::NotFoundError(notFound(id));
    slot = eraseLocked(it, std::nullopt);
    ++stats_.closed;
  }
  // Wait for a step in flight on this session, then free it outside the map lock.
  std::lock_guard<std::mutex> lock(slot->mutex);
  slot->session.reset();
  return absl::OkStatus();
}

size_t SessionRegistry::expireIdle() {
  if (limits_.idleTimeout <= Clock::duration::zero()) return 0;
  int64_t cutoff = (Clock::now() - limits_.idleTimeout).time_since_epoch().count();
  std::vector<std::shared_ptr<SessionSlot>> expired;
  {
    std::unique_lock<std::shared_mutex> lock(mutex_);
    for (auto it = sessions_.begin(); it != sessions_.end();) {
      auto next = std::next(it);
      if (it->second->lastUsedNs.load() < cutoff) {
        // A call holding the session (a long evaluation) keeps it.
        std::unique_lock<std::mutex> busy(it->second->mutex, std::try_to_lock);
        if (busy.owns_lock()) {
          busy.unlock();
          expired.push_back(eraseLocked(it, Gone::Expired));
        }
      }
      it = next;
    }
    stats_.expired += static_cast<int64_t>(expired.size());
  }
  for (auto &slot : expired) {  // outside the map lock
    std::lock_guard<std::mutex> lock(slot->mutex);
    slot->session.reset();
  }
  return expired.size();
}

size_t SessionRegistry::size() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  return sessions_.size();
}

RegistryStats SessionRegistry::stats() const {
  std::shared_lock<std::shared_mutex> lock(mutex_);
  RegistryStats s = stats_;
  s.sessions = sessions_.size();
  s.clients = perClient_.size();
  return s;
}

}  // namespace mlir_rl::server
