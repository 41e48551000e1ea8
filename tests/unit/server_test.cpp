// The server's own pieces without gRPC's transport: the session registry's leases, quotas and eviction (also hammered
// from several threads, for TSan), token authentication and the metrics text.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "server/Auth.h"
#include "server/Metrics.h"
#include "server/SessionRegistry.h"

namespace mlir_rl {
namespace {

using server::RegistryLimits;
using server::SessionRegistry;

std::unique_ptr<env::Session> noSession() { return nullptr; }  // the registry never looks inside a session

TEST(Registry, IdleSessionsExpireAndSaySo) {
  RegistryLimits limits;
  limits.idleTimeout = std::chrono::milliseconds(50);
  SessionRegistry registry(limits);
  auto id = registry.add(noSession(), "alice");
  ASSERT_TRUE(id.ok());
  auto busy = registry.add(noSession(), "alice");
  ASSERT_TRUE(busy.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  // A session a call holds (its mutex locked) is kept.
  auto held = registry.find(*busy);
  ASSERT_TRUE(held.ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(80));
  {
    std::lock_guard<std::mutex> lock((*held)->mutex);
    EXPECT_EQ(registry.expireIdle(), 1u);
  }
  auto gone = registry.find(*id);
  EXPECT_EQ(gone.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(gone.status().message().find("expired"), std::string::npos) << gone.status();
  EXPECT_TRUE(registry.find(*busy).ok());
  EXPECT_EQ(registry.stats().expired, 1);
  EXPECT_NE(registry.find("never").status().message().find("never created"), std::string::npos);
}

TEST(Registry, QuotasAndEvictionAtCapacity) {
  RegistryLimits limits;
  limits.maxSessions = 3;
  limits.maxPerClient = 2;
  limits.evictableAfter = std::chrono::milliseconds(30);
  SessionRegistry registry(limits);
  auto a1 = registry.add(noSession(), "alice");
  ASSERT_TRUE(registry.add(noSession(), "alice").ok());
  auto quota = registry.add(noSession(), "alice");
  EXPECT_EQ(quota.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(quota.status().message().find("client 'alice'"), std::string::npos) << quota.status();
  ASSERT_TRUE(registry.add(noSession(), "bob").ok());
  // Full, and nobody idle long enough: refused.
  auto full = registry.add(noSession(), "carol");
  EXPECT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("--max_sessions"), std::string::npos) << full.status();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  ASSERT_TRUE(registry.find(*a1).ok());  // used: no longer the idlest
  auto carol = registry.add(noSession(), "carol");
  ASSERT_TRUE(carol.ok()) << carol.status();
  EXPECT_TRUE(registry.find(*a1).ok());
  EXPECT_EQ(registry.stats().evicted, 1);
  EXPECT_EQ(registry.size(), 3u);
  // Closing gives the client its quota back.
  EXPECT_TRUE(registry.remove(*a1).ok());
  EXPECT_TRUE(registry.add(noSession(), "alice").ok());
}

TEST(Registry, ConcurrentCallsExpiryAndEviction) {
  RegistryLimits limits;
  limits.maxSessions = 64;
  limits.maxPerClient = 64;
  limits.idleTimeout = std::chrono::milliseconds(5);
  limits.evictableAfter = std::chrono::milliseconds(0);
  SessionRegistry registry(limits);
  std::atomic<bool> stop{false};
  std::atomic<int64_t> found{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t)
    threads.emplace_back([&, t] {
      std::vector<std::string> mine;
      for (int i = 0; i < 2000; ++i) {
        auto id = registry.add(noSession(), "client-" + std::to_string(t % 3));
        if (id.ok()) mine.push_back(*id);
        if (!mine.empty()) {
          auto slot = registry.find(mine[i % mine.size()]);
          if (slot.ok()) {
            std::lock_guard<std::mutex> lock((*slot)->mutex);
            ++found;
          }
        }
        if (i % 3 == 0 && !mine.empty()) {
          (void)registry.remove(mine.back());
          mine.pop_back();
        }
      }
    });
  std::thread reaper([&] {
    while (!stop) registry.expireIdle();
  });
  for (auto &t : threads) t.join();
  stop = true;
  reaper.join();
  EXPECT_GT(found.load(), 0);
  EXPECT_LE(registry.size(), 64u);
}

TEST(Auth, TokensAreCheckedAndNamed) {
  auto none = server::Authenticator::fromTokens({{"short", "tiny"}});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kInvalidArgument);
  auto auth = server::Authenticator::fromTokens({{"alice", "alice-0123456789abcdef"}});
  ASSERT_TRUE(auth.ok());
  EXPECT_TRUE(auth->requiresToken());
}

TEST(Metrics, PrometheusTextGroupsSamplesUnderOneHelpLine) {
  server::MetricsText m;
  m.counter("x_total", "things", 3, "kind=\"a\"");
  m.counter("x_total", "things", 4, "kind=\"b\"");
  m.gauge("y", "a level", 1.5);
  server::CallMetrics calls({"Step"});
  calls.record(0, 0, 0.0002);
  calls.record(0, 3, 2.0);
  calls.write(m);
  std::string text = m.str();
  EXPECT_NE(text.find("# HELP x_total things\n# TYPE x_total counter\nx_total{kind=\"a\"} 3\nx_total{kind=\"b\"} 4\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("y 1.5\n"), std::string::npos);
  EXPECT_NE(text.find("mlir_rl_calls_total{method=\"Step\",code=\"INVALID_ARGUMENT\"} 1"), std::string::npos);
  EXPECT_NE(text.find("mlir_rl_call_seconds_bucket{method=\"Step\",le=\"0.0005\"} 1"), std::string::npos);
  EXPECT_NE(text.find("mlir_rl_call_seconds_bucket{method=\"Step\",le=\"+Inf\"} 2"), std::string::npos);
  EXPECT_NE(text.find("mlir_rl_call_seconds_count{method=\"Step\"} 2"), std::string::npos);
}

}  // namespace
}  // namespace mlir_rl
