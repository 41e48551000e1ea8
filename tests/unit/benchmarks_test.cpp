// Every built-in benchmark parses, verifies, compiles and runs; its output is finite and deterministic. The
// datasets have the sizes benchmarks/tools/generate.py produces, and every benchmark describes itself.
//
// Cost on this 2-core machine: nn-ops, models and lqcd (222 benchmarks) compile in ≈ 13 s and run twice each
// untransformed in ≈ 2 × 13 s; models-full (4 whole networks, VGG-16 alone ≈ 10 s) is compiled and run once (≈ 20 s).
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <map>
#include <string>
#include <vector>

#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

// Produced by benchmarks/tools/generate.py; keep in step with benchmarks/README.md.
const std::map<std::string, size_t> &expectedCounts() {
  static const std::map<std::string, size_t> counts = {
      {"nn-ops", 138}, {"models", 72}, {"lqcd", 12}, {"models-full", 4}};
  return counts;
}

// Datasets that are only compiled and run once (whole networks: slow untransformed).
bool runOnce(const std::string &dataset) { return dataset == "models-full"; }

std::string datasetOf(const std::string &uri) {
  std::string rest = uri.substr(std::strlen("benchmark://"));
  return rest.substr(0, rest.find('/'));
}

// Index of the first non-finite element of a float buffer, or -1.
int64_t firstNonFinite(const runners::Buffer &b) {
  int64_t n = b.spec().numElements();
  if (b.spec().kind == runners::ElementKind::F32) {
    const float *p = static_cast<const float *>(b.data());
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  } else if (b.spec().kind == runners::ElementKind::F64) {
    const double *p = static_cast<const double *>(b.data());
    for (int64_t i = 0; i < n; ++i)
      if (!std::isfinite(p[i])) return i;
  }
  return -1;
}

// CPU time of the calling thread (the untransformed kernels are single-threaded), robust to a loaded machine.
double threadCpuMs() {
  timespec ts;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

// Compiles `uri` untransformed and runs it `runs` times on seeded inputs; checks finite, identical outputs.
void checkRuns(const std::string &uri, int runs) {
  SCOPED_TRACE(uri);
  auto b = testing::registry().get(uri);
  ASSERT_TRUE(b.ok()) << b.status();
  std::string error;
  auto compiled = runners::Compiler::compile((*b)->module(), {});
  ASSERT_TRUE(compiled.ok()) << compiled.status();
  auto &kernel = *compiled;
  auto inputs = runners::makeInputs(kernel->signature(), 3);
  std::vector<runners::Buffer> first;
  first = kernel->run(inputs);
  ASSERT_EQ(first.size(), kernel->signature().results.size());
  for (size_t i = 0; i < first.size(); ++i) EXPECT_EQ(firstNonFinite(first[i]), -1) << "result " << i;
  for (int r = 1; r < runs; ++r) {
    std::vector<runners::Buffer> again;
    again = kernel->run(inputs);
    ASSERT_EQ(first.size(), again.size());
    for (size_t i = 0; i < first.size(); ++i)
      EXPECT_EQ(0, std::memcmp(first[i].data(), again[i].data(), first[i].spec().numBytes())) << "result " << i;
  }
}

TEST(Benchmarks, EveryBuiltInRunsDeterministically) {
  auto uris = testing::registry().uris();
  ASSERT_GE(uris.size(), 5u);
  for (const std::string &uri : uris)
    if (!runOnce(datasetOf(uri))) checkRuns(uri, 2);
}

TEST(Benchmarks, WholeNetworksCompileAndRunOnce) {
  size_t seen = 0;
  for (const std::string &uri : testing::registry().uris())
    if (runOnce(datasetOf(uri))) {
      checkRuns(uri, 1);
      ++seen;
    }
  EXPECT_EQ(seen, expectedCounts().at("models-full"));
}

TEST(Benchmarks, DatasetSizesAndMetadata) {
  std::map<std::string, size_t> counts;
  for (const std::string &uri : testing::registry().uris()) {
    SCOPED_TRACE(uri);
    auto b = testing::registry().get(uri);
    ASSERT_TRUE(b.ok()) << b.status();
    const env::BenchmarkInfo &info = (*b)->info();
    ++counts[info.dataset];
    EXPECT_EQ(info.dataset, datasetOf(uri));
    EXPECT_FALSE(info.description.empty());
    EXPECT_FALSE(info.opFamilies.empty());
    EXPECT_GE(info.numOps, 1);
    EXPECT_GT(info.flops, 0);
    EXPECT_TRUE(info.dtype == "f32" || info.dtype == "f64") << info.dtype;
  }
  for (const auto &[dataset, expected] : expectedCounts()) EXPECT_EQ(counts[dataset], expected) << dataset;
}

TEST(Benchmarks, UnknownAndMalformedUris) {
  EXPECT_EQ(testing::registry().get("benchmark://nn-ops/nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::registry().get("nn-ops/matmul").status().code(), absl::StatusCode::kInvalidArgument);
}

// Not part of the suite: prints the untransformed compile and run time of every benchmark (the figures in
// benchmarks/README.md). Run with --gtest_also_run_disabled_tests --gtest_filter='*ReportUntransformedTimes';
// MLIR_RL_REPORT_DIR points it at another benchmarks directory, MLIR_RL_REPORT_DATASET keeps one dataset.
TEST(Benchmarks, DISABLED_ReportUntransformedTimes) {
  using Clock = std::chrono::steady_clock;
  const char *dir = std::getenv("MLIR_RL_REPORT_DIR");
  const char *only = std::getenv("MLIR_RL_REPORT_DATASET");
  env::BenchmarkRegistry registry(testing::context(), dir ? dir : MLIR_RL_BENCHMARKS_DIR);
  ASSERT_TRUE(registry.scan().ok());
  struct Total {
    int count = 0;
    double compileMs = 0, runMs = 0, cpuMs = 0, maxCpuMs = 0;
    std::string slowest;
  };
  std::map<std::string, Total> totals;
  for (const std::string &uri : registry.uris()) {
    std::string dataset = datasetOf(uri);
    if (only && dataset != only) continue;
    auto b = registry.get(uri);
    ASSERT_TRUE(b.ok()) << b.status();
    std::string error;
    auto start = Clock::now();
    auto compiled = runners::Compiler::compile((*b)->module(), {});
    ASSERT_TRUE(compiled.ok()) << uri << ": " << compiled.status();
    auto &kernel = *compiled;
    double compileMs = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    auto inputs = runners::makeInputs(kernel->signature(), 3);
    // The first run pays for page faults on fresh outputs; report the second.
    std::vector<runners::Buffer> out;
    start = Clock::now();
    out = kernel->run(inputs);
    double firstMs = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    start = Clock::now();
    double cpuStart = threadCpuMs();
    out = kernel->run(inputs);
    double runMs = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    double cpuMs = threadCpuMs() - cpuStart;
    bool finite = true;
    for (const runners::Buffer &o : out) finite = finite && firstNonFinite(o) == -1;
    std::printf("%-60s ops %3d %9.1f MFLOP  compile %7.1f ms  run %8.1f ms (cpu %8.1f, first %8.1f) %5.2f GFLOP/s%s\n",
                uri.c_str(), (*b)->info().numOps, (*b)->info().flops / 1e6, compileMs, runMs, cpuMs, firstMs,
                (*b)->info().flops / (cpuMs * 1e6), finite ? "" : "  NON-FINITE OUTPUT");
    std::fflush(stdout);
    Total &t = totals[dataset];
    ++t.count;
    t.compileMs += compileMs;
    t.runMs += runMs;
    t.cpuMs += cpuMs;
    if (cpuMs > t.maxCpuMs) {
      t.maxCpuMs = cpuMs;
      t.slowest = uri;
    }
  }
  for (const auto &[dataset, t] : totals)
    std::printf("== %-12s %4d benchmarks  compile %6.1f s  run once %6.1f s (cpu %6.1f s)  slowest %8.1f ms cpu (%s)\n",
                dataset.c_str(), t.count, t.compileMs / 1e3, t.runMs / 1e3, t.cpuMs / 1e3, t.maxCpuMs,
                t.slowest.c_str());
}

}  // namespace
}  // namespace mlir_rl
