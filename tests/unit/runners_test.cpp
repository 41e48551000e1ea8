// Runners: lowering + JIT + the memref ABI, checked against an independent C++ computation.
#include <cmath>
#include <cstring>

#include <gtest/gtest.h>

#include "mlir/Parser/Parser.h"

#include "runners/Evaluator.h"
#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

using runners::Buffer;

// The timing tests' kernel (add_256x256_f32, ~50 us) compiled once per test, with its inputs.
class RunnersTiming : public ::testing::Test {
 protected:
  void SetUp() override {
    auto b = testing::benchmark("add_256x256_f32");
    ASSERT_TRUE(b);
    auto compiled = runners::Compiler::compile(b->module(), {});
    ASSERT_TRUE(compiled.ok()) << compiled.status();
    kernel = std::move(*compiled);
    inputs = runners::makeInputs(kernel->signature(), 0);
  }
  std::unique_ptr<runners::CompiledKernel> kernel;
  std::vector<Buffer> inputs;
};

TEST(Runners, MatmulMatchesNaiveCpp) {
  auto b = testing::benchmark("matmul_64x64x64_f32");
  ASSERT_TRUE(b);
  std::string error;
  auto compiled = runners::Compiler::compile(b->module(), {});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto &kernel = *compiled;
  auto inputs = runners::makeInputs(kernel->signature(), 7);
  std::vector<Buffer> outputs;
  outputs = kernel->run(inputs);
  ASSERT_EQ(outputs.size(), 1u);
  const float *A = static_cast<const float *>(inputs[0].data());
  const float *B = static_cast<const float *>(inputs[1].data());
  const float *C = static_cast<const float *>(outputs[0].data());
  double maxErr = 0;
  for (int i = 0; i < 64; ++i)
    for (int j = 0; j < 64; ++j) {
      double acc = 0;
      for (int k = 0; k < 64; ++k) acc += double(A[i * 64 + k]) * B[k * 64 + j];
      maxErr = std::max(maxErr, std::fabs(acc - C[i * 64 + j]));
    }
  EXPECT_LT(maxErr, 1e-4);
  EXPECT_GT(kernel->jitMs(), 0.0);
}

// Compiles `text` as the runner does and runs it once on inputs made from `seed`.
void compileAndRun(const char *text, uint64_t seed, std::vector<Buffer> &inputs, std::vector<Buffer> &outputs) {
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, testing::context());
  ASSERT_TRUE(module);
  std::string error;
  auto compiled = runners::Compiler::compile(*module, {});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto &kernel = *compiled;
  inputs = runners::makeInputs(kernel->signature(), seed);
  outputs = kernel->run(inputs);
}

// A broadcast that only adds leading unit dimensions: MLIR 19's broadcast lowering and canonicalization rewrite it
// into each other forever when they share one greedy pattern set (the compile never finished).
TEST(Runners, BroadcastAddingLeadingUnitDimsLowersAndComputes) {
  const char *text = R"mlir(
    func.func @bcast(%a: tensor<2x1xf32>) -> tensor<1x1x2x1xf32> {
      %c0 = arith.constant 0 : index
      %pad = arith.constant 0.0 : f32
      %v = vector.transfer_read %a[%c0, %c0], %pad {in_bounds = [true, true]} : tensor<2x1xf32>, vector<2x1xf32>
      %b = vector.broadcast %v : vector<2x1xf32> to vector<1x1x2x1xf32>
      %e = tensor.empty() : tensor<1x1x2x1xf32>
      %w = vector.transfer_write %b, %e[%c0, %c0, %c0, %c0] {in_bounds = [true, true, true, true]}
          : vector<1x1x2x1xf32>, tensor<1x1x2x1xf32>
      return %w : tensor<1x1x2x1xf32>
    })mlir";
  std::vector<Buffer> inputs, outputs;
  ASSERT_NO_FATAL_FAILURE(compileAndRun(text, 3, inputs, outputs));
  ASSERT_EQ(outputs.size(), 1u);
  EXPECT_EQ(0, std::memcmp(outputs[0].data(), inputs[0].data(), 2 * sizeof(float)));
}

// Math ops without an LLVM intrinsic (erf, tanh) on vectors, as a vectorized GELU has them: convert-math-to-libm
// scalarizes them into vector.extract / libm call / vector.insert, which must still be lowered by
// convert-vector-to-llvm (once, the 2-D case left an unrealized cast from !llvm.array<2 x vector<4xf32>> and the 1-D
// case a vector.extract that LLVM IR translation rejected).
TEST(Runners, LibmMathOnVectorsLowersAndComputes) {
  const char *text = R"mlir(
    func.func @erf_tanh(%a: tensor<2x4xf32>, %b: tensor<8xf32>) -> (tensor<2x4xf32>, tensor<8xf32>) {
      %c0 = arith.constant 0 : index
      %pad = arith.constant 0.0 : f32
      %v = vector.transfer_read %a[%c0, %c0], %pad {in_bounds = [true, true]} : tensor<2x4xf32>, vector<2x4xf32>
      %e = math.erf %v : vector<2x4xf32>
      %o = tensor.empty() : tensor<2x4xf32>
      %w = vector.transfer_write %e, %o[%c0, %c0] {in_bounds = [true, true]} : vector<2x4xf32>, tensor<2x4xf32>
      %u = vector.transfer_read %b[%c0], %pad {in_bounds = [true]} : tensor<8xf32>, vector<8xf32>
      %t = math.tanh %u : vector<8xf32>
      %o1 = tensor.empty() : tensor<8xf32>
      %w1 = vector.transfer_write %t, %o1[%c0] {in_bounds = [true]} : vector<8xf32>, tensor<8xf32>
      return %w, %w1 : tensor<2x4xf32>, tensor<8xf32>
    })mlir";
  std::vector<Buffer> inputs, outputs;
  ASSERT_NO_FATAL_FAILURE(compileAndRun(text, 5, inputs, outputs));
  ASSERT_EQ(outputs.size(), 2u);
  for (int k = 0; k < 2; ++k) {
    const float *in = static_cast<const float *>(inputs[k].data());
    const float *out = static_cast<const float *>(outputs[k].data());
    for (int i = 0; i < 8; ++i) EXPECT_FLOAT_EQ(out[i], k == 0 ? std::erf(in[i]) : std::tanh(in[i])) << k << " " << i;
  }
}

TEST(Runners, InputsAreDeterministicPerSeedAndDifferAcrossSeeds) {
  runners::KernelSignature sig;
  sig.args.push_back({{4, 4}, runners::ElementKind::F32});
  auto a = runners::makeInputs(sig, 1), b = runners::makeInputs(sig, 1), c = runners::makeInputs(sig, 2);
  EXPECT_EQ(0, std::memcmp(a[0].data(), b[0].data(), 64));
  EXPECT_NE(0, std::memcmp(a[0].data(), c[0].data(), 64));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a[0].data()) % 64, 0u);
}

TEST(Runners, CompareBuffersToleratesRoundingButNotWrongValues) {
  runners::TensorSpec spec{{3}, runners::ElementKind::F32};
  Buffer ref(spec), close(spec), wrong(spec);
  float r[3] = {1.f, -2.f, 100.f}, c[3] = {1.00001f, -2.f, 100.001f}, w[3] = {1.f, -2.f, 90.f};
  std::memcpy(ref.data(), r, 12);
  std::memcpy(close.data(), c, 12);
  std::memcpy(wrong.data(), w, 12);
  EXPECT_TRUE(runners::compareBuffers(close, ref).equal);
  auto cmp = runners::compareBuffers(wrong, ref);
  EXPECT_FALSE(cmp.equal);
  EXPECT_NE(cmp.detail.find("element 2"), std::string::npos);
}

TEST(Runners, RejectsDynamicShapes) {
  const char *text = R"mlir(
    func.func @f(%a: tensor<?xf32>) -> tensor<?xf32> { return %a : tensor<?xf32> }
  )mlir";
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, testing::context());
  ASSERT_TRUE(module);
  auto signature = runners::analyzeKernel(*module);
  ASSERT_FALSE(signature.ok());
  EXPECT_NE(signature.status().message().find("static"), std::string::npos);
}

TEST_F(RunnersTiming, TimingReportsStableMedian) {
  runners::TimingOptions opts;
  opts.budgetSeconds = 0.3;
  runners::Timing t = kernel->time(inputs, opts);
  EXPECT_GT(t.medianNs, 0);
  EXPECT_LE(t.minNs, t.medianNs);
  EXPECT_GE(t.repetitions, opts.minRepetitions);
  EXPECT_FALSE(t.raced);
}

// Racing: against a reference 100x faster than the kernel, timing stops at the minimum of samples; against one
// 100x slower (the kernel is clearly faster), it goes on to the spread target or the budget as before.
TEST_F(RunnersTiming, TimingRacesOnlyClearlySlowerCandidates) {
  runners::TimingOptions careful;
  careful.targetSpread = 1e-6;  // never met: the budget ends it
  careful.budgetSeconds = 0.2;
  runners::Timing base = kernel->time(inputs, careful);
  ASSERT_GT(base.medianNs, 0);
  runners::TimingOptions slower = careful;
  slower.raceFactor = 1.25;
  slower.raceAgainstNs = base.medianNs / 100;
  runners::Timing raced = kernel->time(inputs, slower);
  EXPECT_TRUE(raced.raced);
  // (Repetitions are samples x a batch calibrated from the warm-up run, so they are not compared across calls.)
  runners::TimingOptions faster = slower;
  faster.raceAgainstNs = base.medianNs * 100;
  runners::Timing full = kernel->time(inputs, faster);
  EXPECT_FALSE(full.raced);
}

// A run the caller just made (a long one) replaces the warm-up, so each sample is one run and the repetitions count
// samples: racing stops a clearly slower long candidate after raceMinRepetitions of them, and never before the
// first; a short one after the usual minimum.
TEST_F(RunnersTiming, RacingStopsAfterItsOwnMinimumOfSamples) {
  runners::TimingOptions options;
  options.targetSpread = 1e-6;  // never met: 50 samples of this ~50 us kernel end it
  options.budgetSeconds = 10;   // (a warm run over a quarter of the budget would lower the minimum of samples)
  options.raceFactor = 1.25;
  options.raceAgainstNs = 1;         // every candidate is clearly slower than 1 ns
  options.longSampleSeconds = 1e-6;  // this kernel counts as long, warm too
  for (int minimum : {1, 2, 5}) {
    options.raceMinRepetitions = minimum;
    runners::Timing t = kernel->time(inputs, options, /*warmedSeconds=*/1.0);
    EXPECT_TRUE(t.raced);
    EXPECT_EQ(t.repetitions, minimum);
  }
  options.raceMinRepetitions = 0;  // below one: still one sample
  EXPECT_EQ(kernel->time(inputs, options, 1.0).repetitions, 1);
  options.raceMinRepetitions = 2;
  options.longSampleSeconds = 100;  // the kernel counts as short: warm-up, batches, the usual minimum of samples
  runners::Timing shortKernel = kernel->time(inputs, options, 1.0);
  EXPECT_TRUE(shortKernel.raced);
  EXPECT_GE(shortKernel.repetitions, options.minRepetitions);
  options.raceFactor = 0;  // racing off: the minimum of samples, then the budget
  EXPECT_GE(kernel->time(inputs, options, 1.0).repetitions, options.minRepetitions);
}

// A kernel whose checked run was long (cold) but whose warm run is short is timed as a short kernel: the usual
// minimum of samples before racing, not raceMinRepetitions (a memory-bound kernel's first runs after a cold one are
// slow, and two of them overstated its time by up to 1.5x).
TEST_F(RunnersTiming, AKernelLongOnlyWhenColdIsTimedAsAShortOne) {
  runners::TimingOptions options;
  options.targetSpread = 1e-6;
  options.budgetSeconds = 10;
  options.raceFactor = 1.25;
  options.raceAgainstNs = 1;
  options.raceMinRepetitions = 1;
  options.longSampleSeconds = 0.5;  // the "checked run" below (1 s) is long; the warm ~50 us runs are not
  runners::Timing t = kernel->time(inputs, options, /*warmedSeconds=*/1.0);
  EXPECT_TRUE(t.raced);
  EXPECT_GE(t.repetitions, options.minRepetitions);  // samples x a batch of >= 1 ms, not one sample
}

// A kernel too slow for the time left (TimingOptions::deadlineSeconds) is measured with what fits, marked raced,
// instead of running into the time-out: with the warmed run alone when not even one sample fits; after the first
// sample when the next would end past the deadline. Racing is off here, so nothing else stops it early.
TEST_F(RunnersTiming, TimingStopsBeforeTheDeadline) {
  runners::TimingOptions options;
  options.deadlineSeconds = 0.5;
  runners::Timing warmedOnly = kernel->time(inputs, options, /*warmedSeconds=*/1.0);  // a "1 s" run: none fits
  EXPECT_TRUE(warmedOnly.raced);
  EXPECT_EQ(warmedOnly.repetitions, 1);
  EXPECT_DOUBLE_EQ(warmedOnly.medianNs, 1e9);
  options.deadlineSeconds = 1e-4;  // the first sample (a batch of >= 1 ms) is taken, then no other fits
  runners::Timing cut = kernel->time(inputs, options);
  EXPECT_TRUE(cut.raced);
  EXPECT_GT(cut.medianNs, 0);
  options.deadlineSeconds = 0;  // no deadline: the usual minimum of samples, not raced
  runners::Timing full = kernel->time(inputs, options);
  EXPECT_FALSE(full.raced);
}

}  // namespace
}  // namespace mlir_rl
