// Worker isolation: candidates that crash, never finish or exhaust memory kill only their worker; the pool
// reports why, replaces the worker and keeps evaluating.
#include <gtest/gtest.h>

#include <cmath>
#include <csignal>

#include "runners/WorkerPool.h"

namespace mlir_rl {
namespace {

using runners::ExecRequest;
using runners::ExecResult;
using runners::FailureKind;

constexpr const char kReference[] = R"mlir(
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %init = tensor.empty() : tensor<4xf32>
  %r = linalg.add ins(%a, %a : tensor<4xf32>, tensor<4xf32>) outs(%init : tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
})mlir";

// Calls libc's abort(): SIGABRT in the worker.
constexpr const char kAborts[] = R"mlir(
func.func private @abort()
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  func.call @abort() : () -> ()
  return %a : tensor<4xf32>
})mlir";

// Never finishes: the loop accumulates an input value and runs while the sum stays above -1e30 (inputs are in
// [-1, 1)), and the sum is returned, so no optimizer may remove it.
constexpr const char kEndless[] = R"mlir(
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %zero = arith.constant 0.0 : f32
  %limit = arith.constant -1.0e30 : f32
  %v = tensor.extract %a[%c0] : tensor<4xf32>
  %s = scf.while (%acc = %zero) : (f32) -> f32 {
    %go = arith.cmpf ogt, %acc, %limit : f32
    scf.condition(%go) %acc : f32
  } do {
  ^bb0(%acc: f32):
    %next = arith.addf %acc, %v : f32
    scf.yield %next : f32
  }
  %init = tensor.empty() : tensor<4xf32>
  %r = linalg.fill ins(%s : f32) outs(%init : tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
})mlir";

// Needs a 40 GB intermediate buffer (filled from the loop indices, so nothing folds it away).
constexpr const char kHungry[] = R"mlir(
#map = affine_map<(d0, d1) -> (d0, d1)>
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %big = tensor.empty() : tensor<100000x100000xf32>
  %f = linalg.generic {indexing_maps = [#map], iterator_types = ["parallel", "parallel"]} outs(%big : tensor<100000x100000xf32>) {
  ^bb0(%o: f32):
    %i = linalg.index 0 : index
    %ii = arith.index_cast %i : index to i64
    %x = arith.sitofp %ii : i64 to f32
    linalg.yield %x : f32
  } -> tensor<100000x100000xf32>
  %i = arith.constant 99999 : index
  %x = tensor.extract %f[%i, %i] : tensor<100000x100000xf32>
  %init = tensor.empty() : tensor<4xf32>
  %r = linalg.fill ins(%x : f32) outs(%init : tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
})mlir";

// Computes something else than the reference.
constexpr const char kWrong[] = R"mlir(
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  return %a : tensor<4xf32>
})mlir";

// The reference's result after a long serial loop (a multiply-add chain of 2^27 steps whose value is used, multiplied
// by zero, so nothing may fold it away; no fast-math, so it is not vectorized): a correct candidate that runs for
// about a third of a second here.
constexpr const char kSlowButCorrect[] = R"mlir(
#map = affine_map<(d0) -> (d0)>
func.func @k(%a: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %n = arith.constant 134217728 : index
  %zero = arith.constant 0.0 : f32
  %half = arith.constant 0.5 : f32
  %v = tensor.extract %a[%c0] : tensor<4xf32>
  %s = scf.for %i = %c0 to %n step %c1 iter_args(%acc = %zero) -> (f32) {
    %m = arith.mulf %acc, %half : f32
    %next = arith.addf %m, %v : f32
    scf.yield %next : f32
  }
  %init = tensor.empty() : tensor<4xf32>
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} ins(%a : tensor<4xf32>) outs(%init : tensor<4xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.addf %x, %x : f32
    %z = arith.mulf %s, %zero : f32
    %w = arith.addf %y, %z : f32
    linalg.yield %w : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
})mlir";

ExecRequest request(const char *candidate, double timeout = 60) {
  ExecRequest r;
  r.candidateIR = candidate;
  r.referenceIR = kReference;
  r.timing.budgetSeconds = 0.1;
  r.timeoutSeconds = timeout;
  return r;
}

runners::WorkerPoolOptions options(int workers = 1) {
  runners::WorkerPoolOptions o;
  o.runnerPath = MLIR_RL_RUNNER_PATH;
  o.workers = workers;
  o.memoryLimitMb = 4096;
  return o;
}

TEST(Workers, EvaluatesCorrectCandidates) {
  runners::WorkerPool pool(options());
  ExecResult r = pool.execute(request(kReference));
  EXPECT_TRUE(r.ok()) << r.message;
  EXPECT_TRUE(r.correct);
  EXPECT_GT(r.timing.medianNs, 0);
  ExecResult wrong = pool.execute(request(kWrong));
  EXPECT_EQ(wrong.failure, FailureKind::WrongResult) << wrong.message;
  EXPECT_EQ(pool.stats().spawns, 1);  // the same worker served both
}

TEST(Workers, CrashingCandidateKillsOnlyItsWorker) {
  runners::WorkerPool pool(options());
  ExecResult crash = pool.execute(request(kAborts));
  EXPECT_EQ(crash.failure, FailureKind::Crash);
  EXPECT_NE(crash.message.find("signal 6"), std::string::npos) << crash.message;
  ExecResult after = pool.execute(request(kReference));
  EXPECT_TRUE(after.ok()) << after.message;
  EXPECT_EQ(pool.stats().crashes, 1);
  EXPECT_EQ(pool.stats().spawns, 2);
}

TEST(Workers, EndlessCandidateTimesOut) {
  runners::WorkerPool pool(options());
  ExecResult slow = pool.execute(request(kEndless, /*timeout=*/2.0));
  EXPECT_EQ(slow.failure, FailureKind::Timeout) << slow.message;
  EXPECT_NE(slow.message.find("did not finish"), std::string::npos);
  EXPECT_TRUE(pool.execute(request(kReference)).ok());
}

TEST(Workers, MemoryHungryCandidateIsOutOfMemory) {
  runners::WorkerPool pool(options());
  ExecResult hungry = pool.execute(request(kHungry));
  EXPECT_EQ(hungry.failure, FailureKind::OutOfMemory) << hungry.message;
  EXPECT_NE(hungry.message.find("allocate"), std::string::npos) << hungry.message;
  EXPECT_TRUE(pool.execute(request(kReference)).ok());
}

TEST(Workers, WorkerKilledFromOutsideIsReplaced) {
  runners::WorkerPool pool(options());
  ASSERT_TRUE(pool.execute(request(kReference)).ok());
  auto pids = pool.workerPids();
  ASSERT_EQ(pids.size(), 1u);
  ::kill(pids[0], SIGKILL);
  ExecResult r = pool.execute(request(kReference));
  // The dead worker is noticed on the next exchange, reported as a failure from outside (External: a SIGKILL is
  // never the candidate's doing), and replaced for the request after.
  if (!r.ok()) {
    EXPECT_EQ(r.failure, FailureKind::Internal) << r.message;
    EXPECT_EQ(r.interruption, ExecResult::Interruption::External);
    r = pool.execute(request(kReference));
  }
  EXPECT_TRUE(r.ok()) << r.message;
  EXPECT_NE(pool.workerPids().front(), pids[0]);
}

// Issue 13, defect 7: a stopped worker with a request larger than the pipe blocked the server's write forever.
TEST(Workers, AStoppedWorkerCannotHoldTheCallerPastItsDeadline) {
  runners::WorkerPool pool(options());
  ASSERT_TRUE(pool.execute(request(kReference)).ok());
  pid_t pid = pool.workerPids().at(0);
  ::kill(pid, SIGSTOP);
  ExecRequest big = request(kReference);
  big.candidateIR += "\n// " + std::string(4 << 20, 'x') + "\n";  // 4 MiB: larger than any pipe buffer
  big.callerDeadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(500);
  auto start = std::chrono::steady_clock::now();
  ExecResult r = pool.execute(big);
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_LT(waited, 3.0);
  EXPECT_EQ(r.failure, FailureKind::Internal) << r.message;
  EXPECT_EQ(r.interruption, ExecResult::Interruption::CallerDeadline);
  EXPECT_NE(r.message.find("deadline"), std::string::npos) << r.message;
  // Stopped and past its own time-out: reported as stopped from outside (External), not as the candidate's time-out.
  ASSERT_TRUE(pool.execute(request(kReference)).ok());
  ::kill(pool.workerPids().at(0), SIGSTOP);
  ExecRequest slow = request(kReference, 0.5);
  r = pool.execute(slow);
  EXPECT_EQ(r.failure, FailureKind::Internal) << r.message;
  EXPECT_EQ(r.interruption, ExecResult::Interruption::External);
  EXPECT_NE(r.message.find("stopped from outside"), std::string::npos) << r.message;
  EXPECT_TRUE(pool.execute(request(kReference)).ok());
}

TEST(Workers, CancelAllStopsEvaluationsInFlightAndRefusesNewOnes) {
  runners::WorkerPool pool(options());
  ExecResult r;
  std::thread t([&] { r = pool.execute(request(kEndless, 60.0)); });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  pool.cancelAll("shutting down");
  t.join();
  EXPECT_EQ(r.failure, FailureKind::Internal);
  EXPECT_EQ(r.interruption, ExecResult::Interruption::Cancelled);
  EXPECT_EQ(r.message, "shutting down");
  EXPECT_EQ(pool.execute(request(kReference)).failure, FailureKind::Internal);
}

// A correct candidate too slow for all its samples within the time-out is measured with the samples that fit (or
// its checked run alone) and reported as raced, not stopped as a time-out (which would cost it the failure penalty
// and hold the worker for the whole time-out). Its run time is measured first, and the time-out set from it: the
// checked run and one sample fit, the usual minimum of samples does not.
TEST(Workers, ACorrectButSlowCandidateIsMeasuredWithinItsTimeOut) {
  runners::WorkerPool pool(options());
  ExecRequest probe = request(kSlowButCorrect);
  probe.timing.budgetSeconds = 100;          // the minimum of samples (5) whatever the spread
  ExecResult untimed = pool.execute(probe);  // no time-out to speak of
  ASSERT_TRUE(untimed.ok()) << untimed.message;
  ASSERT_TRUE(untimed.correct);
  EXPECT_FALSE(untimed.timing.raced);
  double run = untimed.timing.medianNs * 1e-9;
  ASSERT_GT(run, 0.01);  // long enough for its checked run to be its warm-up
  ExecRequest tight = probe;
  tight.timeoutSeconds = 0.5 + 3.5 * run;  // compile + checked run + 5 samples (6 runs) do not fit
  ExecResult r = pool.execute(tight);
  EXPECT_TRUE(r.ok()) << r.message;
  EXPECT_TRUE(r.correct);
  EXPECT_TRUE(r.timing.raced);
  EXPECT_GE(r.timing.repetitions, 1);
  EXPECT_LT(r.timing.repetitions, 5);
  // A measurement of the candidate, not of the time-out: the same order as the untimed one (loose: under ctest -j2
  // another test may share the core during one of the two runs; 1.5x failed once that way).
  EXPECT_NEAR(std::log(r.timing.medianNs / untimed.timing.medianNs), 0.0, std::log(3.0));
}

TEST(Workers, TwoWorkersServeConcurrentRequests) {
  runners::WorkerPool pool(options(2));
  ExecResult a, b;
  std::thread t([&] { a = pool.execute(request(kEndless, 2.0)); });
  b = pool.execute(request(kReference));  // not stuck behind the endless one
  t.join();
  EXPECT_TRUE(b.ok()) << b.message;
  EXPECT_EQ(a.failure, FailureKind::Timeout);
}

}  // namespace
}  // namespace mlir_rl
