// Env: sessions, masks, level-pointer interchange, rewards, bad input, fork, and the matmul 512³ speedup target.
#include <gtest/gtest.h>

#include <atomic>
#include <cmath>
#include <thread>

#include "mlir/Parser/Parser.h"

#include "env/Session.h"
#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

using env::ActionType;
using env::Session;
using env::SessionConfig;
using testing::act;

std::unique_ptr<Session> start(const std::string &name, SessionConfig config = {}) {
  auto s = Session::create(testing::benchmark(name), config, 0, &testing::evaluator());
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

const env::NamedTensor &tensor(const std::vector<env::NamedTensor> &obs, const std::string &name) {
  for (const auto &t : obs)
    if (t.name == name) return t;
  static env::NamedTensor none;
  ADD_FAILURE() << "no observation tensor " << name;
  return none;
}

TEST(Env, ObservationMatchesSpaceAndDescribesMatmul) {
  auto s = start("matmul_64x64x64_f32");
  auto obs = s->observe();
  auto space = env::observationSpace(s->config());
  ASSERT_EQ(obs.size(), space.size());
  for (size_t i = 0; i < obs.size(); ++i) {
    EXPECT_EQ(obs[i].name, space[i].name);
    EXPECT_EQ(obs[i].shape, space[i].shape);
    int64_t n = 1;
    for (int64_t d : obs[i].shape) n *= d;
    size_t width = obs[i].dtype == env::DType::Bool                                           ? 1
                   : obs[i].dtype == env::DType::Int64 || obs[i].dtype == env::DType::Float64 ? 8
                                                                                              : 4;
    EXPECT_EQ(obs[i].bytes.size(), n * width) << obs[i].name;
  }
  auto bounds = reinterpret_cast<const int64_t *>(tensor(obs, "loop_bounds").bytes.data());
  EXPECT_EQ(bounds[0], 64);
  EXPECT_EQ(bounds[2], 64);
  EXPECT_EQ(bounds[3], 0);
  auto iters = reinterpret_cast<const int32_t *>(tensor(obs, "iterator_types").bytes.data());
  EXPECT_EQ(iters[0], 1);
  EXPECT_EQ(iters[2], 2);
  auto family = reinterpret_cast<const float *>(tensor(obs, "op_type").bytes.data());
  EXPECT_EQ(family[static_cast<int>(env::OpFamily::Matmul)], 1.f);
}

TEST(Env, MasksFollowLegality) {
  auto s = start("matmul_64x64x64_f32");
  env::ActionMask m = s->mask();
  EXPECT_TRUE(m.type[static_cast<int>(ActionType::Tiling)]);
  EXPECT_TRUE(m.type[static_cast<int>(ActionType::TiledParallelization)]);
  EXPECT_TRUE(m.type[static_cast<int>(ActionType::Interchange)]);
  EXPECT_FALSE(m.type[static_cast<int>(ActionType::Vectorization)]);  // 64^3 elements: far over 512
  EXPECT_NE(m.typeReasons[static_cast<int>(ActionType::Vectorization)].find("exceeds 512"), std::string::npos);
  // Loop 0 (bound 64): every candidate divides it; loop 3 does not exist: only "no tiling".
  for (int k = 0; k < 8; ++k) EXPECT_TRUE(m.tiles[0][k]);
  EXPECT_TRUE(m.tiles[3][0]);
  for (int k = 1; k < 8; ++k) EXPECT_FALSE(m.tiles[3][k]);
  EXPECT_TRUE(m.interchange[2]);
  EXPECT_FALSE(m.interchange[3]);
  // After tiling to 8x16x1 vectorization becomes legal.
  auto r = s->step(act(*s, ActionType::Tiling, {8, 16, 1}));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->applied) << r->failureReason;
  EXPECT_TRUE(s->mask().type[static_cast<int>(ActionType::Vectorization)]);
  EXPECT_FALSE(s->mask().tiles[0][5]);  // size 16 does not divide the tiled bound 8
}

TEST(Env, BadActionsAreRejectedAndStateIsKept) {
  auto s = start("matmul_64x64x64_f32");
  std::string before = s->currentIR();
  auto wrongLength = s->step({1, 2, 3});
  EXPECT_EQ(wrongLength.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(wrongLength.status().message().find("expected 14"), std::string::npos);
  auto v = act(*s, ActionType::Tiling, {8});
  v[2] = 99;
  auto outOfRange = s->step(v);
  EXPECT_EQ(outOfRange.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(outOfRange.status().message().find("tile_1"), std::string::npos);
  auto masked = s->step(act(*s, ActionType::Vectorization));
  EXPECT_EQ(masked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(masked.status().message().find("VECTORIZATION"), std::string::npos);
  // A masked size of an existing loop (after tiling 8x16x1, size 16 does not divide loop 0's 8).
  auto tiled = s->fork();
  ASSERT_TRUE(tiled->step(act(*tiled, ActionType::Tiling, {8, 16, 1})).ok());
  auto maskedTile = tiled->step(act(*tiled, ActionType::Tiling, {16}));
  EXPECT_EQ(maskedTile.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(maskedTile.status().message().find("tile_0"), std::string::npos);
  EXPECT_EQ(tiled->status().step, 1);
  EXPECT_EQ(s->currentIR(), before);
  EXPECT_EQ(s->status().step, 0);
  EXPECT_TRUE(s->actions().empty());
}

TEST(Env, LevelPointerInterchangeStaysOpenUntilComplete) {
  auto s = start("matmul_64x64x64_f32");
  auto r = s->step(act(*s, ActionType::Interchange, {}, 2));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(s->status().interchangePending);
  env::ActionMask m = s->mask();
  EXPECT_FALSE(m.type[static_cast<int>(ActionType::Tiling)]);
  EXPECT_TRUE(m.type[static_cast<int>(ActionType::Interchange)]);
  EXPECT_FALSE(m.interchange[2]);
  EXPECT_TRUE(m.interchange[0]);
  EXPECT_EQ(s->step(act(*s, ActionType::Tiling, {8})).status().code(), absl::StatusCode::kInvalidArgument);
  r = s->step(act(*s, ActionType::Interchange, {}, 0));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("[2, 0, 1]"), std::string::npos) << r->description;
  EXPECT_FALSE(s->status().interchangePending);
  EXPECT_NE(s->currentIR().find("linalg.generic"), std::string::npos);
}

TEST(Env, FinalRewardIsLogSpeedupOfCorrectCode) {
  auto s = start("matmul_64x64x64_f32");
  auto r1 = s->step(act(*s, ActionType::Tiling, {8, 16, 1}));
  ASSERT_TRUE(r1.ok());
  EXPECT_EQ(r1->reward, 0.0);
  EXPECT_FALSE(r1->evaluation.has_value());
  auto r2 = s->step(act(*s, ActionType::Vectorization));
  ASSERT_TRUE(r2.ok()) << r2.status();
  EXPECT_TRUE(r2->applied) << r2->failureReason;
  EXPECT_TRUE(s->status().terminated);
  ASSERT_TRUE(r2->evaluation.has_value());
  const env::EvaluationRecord &e = *r2->evaluation;
  EXPECT_TRUE(e.ok) << e.failure;
  EXPECT_TRUE(e.correct);
  EXPECT_NEAR(r2->reward, std::log10(e.referenceNs / e.timing.medianNs), 1e-9);
  EXPECT_GT(e.speedup, 1.0);
  // The episode is over: further steps are a precondition failure.
  auto after = s->step(act(*s, ActionType::NoTransformation));
  EXPECT_EQ(after.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(Env, ImmediateRewardsTelescopeToFinal) {
  SessionConfig c;
  c.rewardMode = env::RewardMode::Immediate;
  auto s = start("matmul_64x64x64_f32", c);
  double total = 0;
  for (auto a : {act(*s, ActionType::Tiling, {8, 16, 1}), act(*s, ActionType::Vectorization)}) {
    auto r = s->step(a);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->evaluation.has_value());
    total += r->reward;
  }
  auto last = s->fork();  // same state, evaluated again (cached): its final speedup matches the sum of rewards
  env::EvaluationRecord e = testing::evaluator().evaluate(
      s->benchmark(), mlir::parseSourceString<mlir::ModuleOp>(s->currentIR(), testing::context()).get(), 0, 1);
  EXPECT_NEAR(total, std::log10(e.referenceNs / e.timing.medianNs), 1e-9);
}

TEST(Env, BudgetMovesCursorAndMaxStepsTruncates) {
  SessionConfig c;
  c.actionsPerOp = 2;
  auto s = start("matmul_relu_128x128x128_f32", c);
  EXPECT_EQ(s->status().numOps, 2);
  EXPECT_EQ(s->status().currentOp, "linalg.generic");  // consumer first
  ASSERT_TRUE(s->step(act(*s, ActionType::Tiling, {32, 32})).ok());
  ASSERT_TRUE(s->step(act(*s, ActionType::Tiling, {8, 8})).ok());
  EXPECT_EQ(s->status().opIndex, 1);
  EXPECT_EQ(s->status().currentOp, "linalg.matmul");

  SessionConfig t;
  t.maxSteps = 1;
  auto u = start("matmul_relu_128x128x128_f32", t);
  auto r = u->step(act(*u, ActionType::Tiling, {32, 32}));
  ASSERT_TRUE(r.ok());
  ASSERT_TRUE(r->evaluation.has_value());  // FINAL mode evaluates the schedule max_steps ends
  EXPECT_TRUE(r->evaluation->ok) << r->evaluation->failure;
  // ... and pays the whole return on that step: terminated (issue 18.3), so no value is bootstrapped onto it.
  EXPECT_TRUE(u->status().terminated);
  EXPECT_FALSE(u->status().truncated);

  // IMMEDIATE pays as it goes: the episode max_steps cuts short could have earned more, so it is truncated.
  t.rewardMode = env::RewardMode::Immediate;
  auto v = start("matmul_relu_128x128x128_f32", t);
  ASSERT_TRUE(v->step(act(*v, ActionType::Tiling, {32, 32})).ok());
  EXPECT_TRUE(v->status().truncated);
  EXPECT_FALSE(v->status().terminated);
}

// An executor that counts its requests and answers each after a pause with a fixed time (the evaluation service's own
// logic is under test, not the measurement).
class CountingExecutor : public runners::Executor {
 public:
  runners::ExecResult execute(const runners::ExecRequest &) override {
    ++calls;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    runners::ExecResult r;
    r.correct = true;
    r.timing.medianNs = r.timing.minNs = 1000;
    r.timing.repetitions = 5;
    return r;
  }
  std::atomic<int> calls{0};
};

TEST(Evaluation, OneCandidateIsMeasuredOnceForConcurrentSessions) {
  CountingExecutor executor;
  env::EvaluationService service(&executor);
  auto b = testing::benchmark("matmul_64x64x64_f32");
  ASSERT_TRUE(service.reference(*b, 0, 1).ok());  // one call
  std::vector<env::EvaluationRecord> records(6);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < records.size(); ++i)
    threads.emplace_back([&, i] { records[i] = service.evaluate(*b, std::string("candidate IR"), 0, 1); });
  for (auto &t : threads) t.join();
  EXPECT_EQ(executor.calls.load(), 2);  // the reference and one measurement, shared by the six
  int fresh = 0;
  for (const auto &r : records) {
    EXPECT_TRUE(r.ok && r.error.ok());
    fresh += !r.cached;
  }
  EXPECT_EQ(fresh, 1);
  // Refresh measures again; bypass measures and keeps nothing.
  env::EvaluateOptions refresh;
  refresh.readCache = false;
  EXPECT_FALSE(service.evaluate(*b, std::string("candidate IR"), 0, 1, refresh).cached);
  EXPECT_EQ(executor.calls.load(), 3);
  env::EvaluateOptions bypass = refresh;
  bypass.writeCache = false;
  EXPECT_FALSE(service.evaluate(*b, std::string("other IR"), 0, 1, bypass).cached);
  EXPECT_FALSE(service.evaluate(*b, std::string("other IR"), 0, 1).cached);  // not kept by the bypass
  EXPECT_EQ(executor.calls.load(), 5);
}

TEST(Env, ForkIsIndependent) {
  auto s = start("matmul_64x64x64_f32");
  ASSERT_TRUE(s->step(act(*s, ActionType::Tiling, {32, 32, 32})).ok());
  auto f = s->fork();
  ASSERT_TRUE(f->step(act(*f, ActionType::Tiling, {8, 16, 1})).ok());
  EXPECT_EQ(s->status().step, 1);
  EXPECT_EQ(f->status().step, 2);
  EXPECT_NE(s->currentIR(), f->currentIR());
  EXPECT_EQ(f->actions().size(), 2u);
}

TEST(Env, ConfigValidationNamesTheField) {
  SessionConfig c;
  c.tileSizes = {4, 0};
  auto s = Session::create(testing::benchmark("matmul_64x64x64_f32"), c, 0, &testing::evaluator());
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.status().message().find("tile_sizes[1]"), std::string::npos);
}

TEST(Env, WrongResultIsAPenaltyNeverASpeedup) {
  // A candidate that transposes B computes something else: the evaluator must flag it.
  const char *wrong = R"mlir(
    func.func @matmul(%A: tensor<64x64xf32>, %B: tensor<64x64xf32>) -> tensor<64x64xf32> {
      %zero = arith.constant 0.0 : f32
      %init = tensor.empty() : tensor<64x64xf32>
      %C = linalg.fill ins(%zero : f32) outs(%init : tensor<64x64xf32>) -> tensor<64x64xf32>
      %R = linalg.matmul_transpose_b ins(%A, %B : tensor<64x64xf32>, tensor<64x64xf32>) outs(%C : tensor<64x64xf32>) -> tensor<64x64xf32>
      return %R : tensor<64x64xf32>
    })mlir";
  auto module = mlir::parseSourceString<mlir::ModuleOp>(wrong, testing::context());
  ASSERT_TRUE(module);
  auto b = testing::benchmark("matmul_64x64x64_f32");
  env::EvaluationRecord e = testing::evaluator().evaluate(*b, *module, 0, 1);
  EXPECT_FALSE(e.ok);
  EXPECT_FALSE(e.correct);
  EXPECT_NE(e.failure.find("wrong result"), std::string::npos) << e.failure;
}

TEST(Env, EvaluationCacheServesRepeatedCandidates) {
  auto b = testing::benchmark("relu_128x256_f32");
  env::EvaluationRecord first = testing::evaluator().evaluate(*b, b->module(), 5, 1);
  env::EvaluationRecord second = testing::evaluator().evaluate(*b, b->module(), 5, 1);
  EXPECT_TRUE(first.ok) << first.failure;
  EXPECT_FALSE(first.cached);
  EXPECT_TRUE(second.cached);
  EXPECT_EQ(first.timing.medianNs, second.timing.medianNs);
}

// A scripted schedule on matmul 512³ f32 (a register tile of 8x16, vectorized) beats the untransformed reference by
// far on one core, with a correct result. The figure is printed, not timed-asserted beyond a loose bound: the ratio
// is 60-100x in a normal build, and the sanitizers' build in CI measured 16.6x on a slow VM (the first slice's bound
// of 20x failed there).
TEST(Env, ScriptedMatmul512ScheduleIsFarFaster) {
  auto s = start("matmul_512x512x512_f32");
  for (auto a : {act(*s, ActionType::Tiling, {64, 64, 0}), act(*s, ActionType::Tiling, {8, 16, 1}),
                 act(*s, ActionType::Vectorization)}) {
    auto r = s->step(a);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->applied) << r->failureReason;
    if (r->evaluation) {
      const env::EvaluationRecord &e = *r->evaluation;
      ASSERT_TRUE(e.ok) << e.failure;
      std::printf(
          "[matmul 512^3 f32] reference %.2f ms, scheduled %.3f ms (spread %.3f, %d runs), speedup %.1fx, "
          "lower %.1f ms, jit %.1f ms\n",
          e.referenceNs / 1e6, e.timing.medianNs / 1e6, e.timing.spread, e.timing.repetitions, e.speedup, e.lowerMs,
          e.jitMs);
      EXPECT_TRUE(e.correct);
      EXPECT_GE(e.speedup, 8.0);
    }
  }
  EXPECT_TRUE(s->status().terminated);
}

}  // namespace
}  // namespace mlir_rl

namespace mlir_rl {
namespace {

TEST(Env, PenalizeModeTurnsMaskedActionsIntoFailedSteps) {
  env::SessionConfig c;
  c.penalizeMaskedActions = true;
  c.actionsPerOp = 2;
  auto s = start("matmul_64x64x64_f32", c);
  std::string before = s->currentIR();
  auto r = s->step(act(*s, env::ActionType::Vectorization));  // masked: 64^3 elements
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(r->applied);
  EXPECT_EQ(r->reward, c.transformPenalty);
  EXPECT_NE(r->failureReason.find("masked"), std::string::npos);
  EXPECT_EQ(s->currentIR(), before);
  EXPECT_EQ(s->status().step, 1);
  // Malformed actions stay errors in this mode.
  EXPECT_EQ(s->step({1, 2}).status().code(), absl::StatusCode::kInvalidArgument);
  // The budget still ends the op (and the episode, which is then evaluated).
  auto last = s->step(act(*s, env::ActionType::Vectorization));
  ASSERT_TRUE(last.ok());
  EXPECT_TRUE(s->status().terminated);
  ASSERT_TRUE(last->evaluation.has_value());
  const env::EvaluationRecord &e = *last->evaluation;
  EXPECT_TRUE(e.ok) << e.failure;
  EXPECT_NEAR(last->reward, c.transformPenalty + std::log10(e.referenceNs / e.timing.medianNs), 1e-9);
}

}  // namespace
}  // namespace mlir_rl
