// Shared payload states and the transition cache: a step another session already took is found again, shared
// states never change under a session, the budget bounds the cache, and concurrent sessions end in exactly the
// states a fresh, uncached replay of their actions gives.
#include <gtest/gtest.h>

#include <random>
#include <thread>

#include "llvm/Support/raw_ostream.h"
#include "mlir/IR/BuiltinOps.h"

#include "env/OpFacts.h"
#include "env/Session.h"
#include "env/StateCache.h"
#include "support/LruCache.h"
#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

using env::ActionType;
using env::PayloadState;
using env::Session;
using env::TransitionCache;
using testing::act;

constexpr size_t kDefaultBudget = 256u << 20;

std::unique_ptr<Session> start(const std::string &name) {
  auto s = Session::create(testing::benchmark(name), {}, 0, &testing::evaluator());
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

std::string observationBytes(const Session &s) {
  std::string out;
  for (const env::NamedTensor &t : s.observe()) out += t.name + ":" + t.bytes + ";";
  return out;
}

// The LRU map both caches (transitions, evaluation results) are built on.
TEST(LruCache, EvictsLeastRecentlyUsedByCostAndRefusesWhatCannotFit) {
  support::LruCache<int, std::string> lru(10);
  EXPECT_TRUE(lru.insert(1, "a", 4));
  EXPECT_TRUE(lru.insert(2, "b", 4));
  EXPECT_FALSE(lru.insert(2, "other", 1));  // present: kept as it was
  EXPECT_EQ(*lru.find(2), "b");
  ASSERT_NE(lru.find(1), nullptr);     // 1 is now the most recently used
  EXPECT_TRUE(lru.insert(3, "c", 4));  // 12 > 10: 2 goes
  EXPECT_EQ(lru.find(2), nullptr);
  EXPECT_NE(lru.find(1), nullptr);
  EXPECT_EQ(lru.cost(), 8u);
  EXPECT_EQ(lru.evictions(), 1u);
  EXPECT_FALSE(lru.insert(4, "d", 11));  // more than the whole budget
  lru.setBudget(4);                      // shrinking evicts down to the budget: 3 is older than 1
  EXPECT_EQ(lru.size(), 1u);
  EXPECT_NE(lru.find(1), nullptr);
  EXPECT_EQ(lru.take(1), std::optional<std::string>("a"));  // handed over and gone
  EXPECT_EQ(lru.take(1), std::nullopt);
  EXPECT_EQ(lru.cost(), 0u);
}

TEST(TransitionCache, SecondSessionTakingTheSameStepHitsAndGetsTheSameState) {
  TransitionCache &cache = TransitionCache::shared();
  auto a = start("matmul_128x128x128_f32"), b = start("matmul_128x128x128_f32");
  auto before = cache.stats();
  ASSERT_TRUE(a->step(act(*a, ActionType::Tiling, {32, 16, 8})).ok());
  auto afterFirst = cache.stats();
  ASSERT_TRUE(b->step(act(*b, ActionType::Tiling, {32, 16, 8})).ok());
  auto afterSecond = cache.stats();
  EXPECT_EQ(afterSecond.hits, afterFirst.hits + 1);
  EXPECT_EQ(afterSecond.misses, afterFirst.misses);
  EXPECT_GE(afterFirst.misses + afterFirst.hits, before.misses + before.hits + 1);
  EXPECT_EQ(a->currentIR(), b->currentIR());
  EXPECT_EQ(observationBytes(*a), observationBytes(*b));
  // The schedules name their values after their own steps, whatever state they share.
  EXPECT_EQ(a->schedule(), b->schedule());
  // A different action is a different transition.
  ASSERT_TRUE(b->step(act(*b, ActionType::Tiling, {0, 0, 4})).ok());
  EXPECT_EQ(cache.stats().hits, afterSecond.hits);
  EXPECT_NE(a->currentIR(), b->currentIR());
}

TEST(TransitionCache, SharedStatesNeverChangeUnderASession) {
  auto a = start("matmul_64x64x64_f32");
  ASSERT_TRUE(a->step(act(*a, ActionType::Tiling, {32, 32, 32})).ok());
  auto b = a->fork();  // shares a's state
  std::string shared = a->currentIR(), observed = observationBytes(*a);
  ASSERT_TRUE(b->step(act(*b, ActionType::Tiling, {8, 16, 1})).ok());
  ASSERT_TRUE(b->step(act(*b, ActionType::Vectorization)).ok());
  EXPECT_EQ(a->currentIR(), shared);
  EXPECT_EQ(observationBytes(*a), observed);
  // A new session of the benchmark starts from the benchmark's own module, untouched by either.
  auto c = start("matmul_64x64x64_f32");
  std::string pristine;
  llvm::raw_string_ostream os(pristine);
  testing::benchmark("matmul_64x64x64_f32")->module()->print(os);
  EXPECT_EQ(c->currentIR(), os.str());
}

TEST(TransitionCache, BudgetBoundsWhatItHoldsLeastRecentlyUsedFirst) {
  auto base = testing::benchmark("matmul_64x64x64_f32");
  auto state = [&] { return PayloadState::derived(mlir::OwningOpRef<mlir::ModuleOp>(base->module().clone())); };
  size_t one = state()->numOps() * TransitionCache::kBytesPerOp + TransitionCache::kFactsBytesPerState;
  TransitionCache cache(3 * one + 3 * 1024);  // room for three states and their keys
  for (int i = 0; i < 3; ++i) cache.insert(1, "f" + std::to_string(i), {state(), ""});
  EXPECT_EQ(cache.stats().entries, 3u);
  ASSERT_TRUE(cache.find(1, "f0"));  // f0 is now the most recently used
  cache.insert(1, "f3", {state(), ""});
  EXPECT_EQ(cache.stats().evictions, 1u);
  EXPECT_TRUE(cache.find(1, "f0"));
  EXPECT_FALSE(cache.find(1, "f1"));  // the least recently used went first
  EXPECT_TRUE(cache.find(1, "f3"));
  EXPECT_FALSE(cache.find(2, "f3"));  // another parent
  // Failures are transitions too; the state a session holds outlives its eviction.
  cache.insert(7, "bad", {nullptr, "transformation failed: reason"});
  auto failed = cache.find(7, "bad");
  ASSERT_TRUE(failed);
  EXPECT_FALSE(failed->state);
  EXPECT_EQ(failed->failure, "transformation failed: reason");
  std::shared_ptr<const PayloadState> held = cache.find(1, "f3")->state;
  cache.setBudget(0);
  EXPECT_EQ(cache.stats().entries, 0u);
  EXPECT_GT(held->numOps(), 0u);
  cache.insert(1, "f4", {state(), ""});
  EXPECT_FALSE(cache.find(1, "f4"));  // a zero budget remembers nothing
}

// Random masked episodes, as (benchmark, actions) and where they ended.
struct Episode {
  std::string benchmark;
  std::vector<std::vector<int64_t>> actions;
  std::string ir, observation;
  std::vector<double> rewards;
};

// What a state memoizes for masks and observations is kept per configuration: sessions with other tile sizes or
// another vector limit at the very same state get their own masks, the ones a session alone there computes.
TEST(PayloadState, SessionsWithOtherConfigurationsAtOneStateGetTheirOwnMasks) {
  env::SessionConfig narrow;
  narrow.tileSizes = {4, 8};
  narrow.maxVectorElements = 256;
  auto create = [](const env::SessionConfig &config) {
    auto s = Session::create(testing::benchmark("matmul_64x64x64_f32"), config, 0, &testing::evaluator());
    EXPECT_TRUE(s.ok()) << s.status();
    return std::move(*s);
  };
  auto wide = start("matmul_64x64x64_f32");
  auto small = create(narrow);
  ASSERT_TRUE(wide->step(act(*wide, ActionType::Tiling, {8, 8, 8})).ok());
  ASSERT_TRUE(small->step(act(*small, ActionType::Tiling, {8, 8, 8})).ok());  // the same transition: the same state
  ASSERT_EQ(wide->currentIR(), small->currentIR());
  EXPECT_EQ(wide->mask().tiles[0].size(), 8u);
  EXPECT_EQ(small->mask().tiles[0].size(), 3u);
  const int vectorize = static_cast<int>(ActionType::Vectorization);
  EXPECT_EQ(wide->mask().type[vectorize], 1);   // 8 x 8 x 8 = 512 elements
  EXPECT_EQ(small->mask().type[vectorize], 0);  // more than 256
  // The same state reached alone (cache off: a fresh state, nothing memoized) gives the same masks and observation.
  TransitionCache::shared().setBudget(0);
  auto alone = create(narrow);
  ASSERT_TRUE(alone->step(act(*alone, ActionType::Tiling, {8, 8, 8})).ok());
  TransitionCache::shared().setBudget(kDefaultBudget);
  EXPECT_EQ(alone->mask().type, small->mask().type);
  EXPECT_EQ(alone->mask().tiles, small->mask().tiles);
  EXPECT_EQ(observationBytes(*alone), observationBytes(*small));
}

// A state keeps a bounded number of facts: past the bound they are computed for the caller and not kept.
TEST(PayloadState, KeepsABoundedNumberOfFacts) {
  auto state = PayloadState::derived(
      mlir::OwningOpRef<mlir::ModuleOp>(testing::benchmark("matmul_64x64x64_f32")->module().clone()));
  int computed = 0;
  auto make = [&] {
    ++computed;
    return std::make_shared<const env::OpFacts>(1, 1);
  };
  for (size_t i = 0; i < PayloadState::kMaxFactsPerState; ++i) state->facts("k" + std::to_string(i), make);
  EXPECT_EQ(computed, static_cast<int>(PayloadState::kMaxFactsPerState));
  auto kept = state->facts("k0", make);
  EXPECT_EQ(state->facts("k0", make), kept);  // found, not computed again
  EXPECT_EQ(computed, static_cast<int>(PayloadState::kMaxFactsPerState));
  auto extra = state->facts("one more", make);
  EXPECT_NE(state->facts("one more", make), extra);  // computed each time, never kept
  EXPECT_EQ(computed, static_cast<int>(PayloadState::kMaxFactsPerState) + 2);
}

Episode play(const std::string &benchmark, uint64_t seed, int maxSteps) {
  Episode e{benchmark, {}, "", "", {}};
  auto s = start(benchmark);
  std::mt19937_64 rng(seed);
  for (int i = 0; i < maxSteps && !s->done(); ++i) {
    env::ActionMask m = s->mask();
    auto pick = [&](const std::vector<uint8_t> &mask) { return testing::pickLegal(mask, rng); };
    // Any legal type but the ones that end the op (NO_TRANSFORMATION, VECTORIZATION): no evaluation happens.
    std::vector<uint8_t> types = m.type;
    types[static_cast<int>(ActionType::NoTransformation)] = types[static_cast<int>(ActionType::Vectorization)] = 0;
    if (std::find(types.begin(), types.end(), 1) == types.end()) break;
    std::vector<int64_t> a{pick(types)};
    for (const auto &row : m.tiles) a.push_back(pick(row));
    a.push_back(pick(m.interchange));
    auto r = s->step(a);
    if (!r.ok()) break;  // a masked combination of heads: end the episode here
    e.actions.push_back(a);
    e.rewards.push_back(r->reward);
  }
  e.ir = s->currentIR();
  e.observation = observationBytes(*s);
  return e;
}

TEST(TransitionCache, ConcurrentSessionsEndWhereAnUncachedReplayEnds) {
  const std::vector<std::string> benchmarks = {"matmul_64x64x64_f32", "matmul_128x128x128_f32", "add_128x768_f32"};
  std::vector<Episode> episodes(24);
  // Two threads; the same seeds recur so that sessions meet at shared states and reuse each other's transitions.
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t)
    threads.emplace_back([&, t] {
      for (size_t i = t; i < episodes.size(); i += 2) episodes[i] = play(benchmarks[i % benchmarks.size()], i % 6, 4);
    });
  for (auto &th : threads) th.join();
  size_t steps = 0;
  for (const Episode &e : episodes) steps += e.actions.size();
  EXPECT_GE(steps, 2 * episodes.size());  // the episodes did move
  // The same actions with the cache off: every transformation applied afresh.
  TransitionCache::shared().setBudget(0);
  for (const Episode &e : episodes) {
    auto s = start(e.benchmark);
    for (const auto &a : e.actions) ASSERT_TRUE(s->step(a).ok());
    EXPECT_EQ(s->currentIR(), e.ir) << e.benchmark;
    EXPECT_EQ(observationBytes(*s), e.observation) << e.benchmark;
  }
  TransitionCache::shared().setBudget(kDefaultBudget);
}

}  // namespace
}  // namespace mlir_rl
