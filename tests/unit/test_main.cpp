#include <gtest/gtest.h>

#include "support/Context.h"
#include "tests/unit/TestSupport.h"

#include "support/Diagnostics.h"

namespace mlir_rl::testing {

mlir::MLIRContext *context() {
  static std::unique_ptr<mlir::MLIRContext> ctx = support::createContext();
  return ctx.get();
}

env::BenchmarkRegistry &registry() {
  static env::BenchmarkRegistry *r = [] {
    auto *reg = new env::BenchmarkRegistry(context(), MLIR_RL_BENCHMARKS_DIR);
    EXPECT_TRUE(reg->scan().ok());
    return reg;
  }();
  return *r;
}

env::EvaluationService &evaluator() {
  runners::TimingOptions timing;
  timing.budgetSeconds = 0.5;
  static runners::InProcessExecutor executor(context());
  static env::EvaluationService service(&executor, timing);
  return service;
}

std::shared_ptr<const env::Benchmark> benchmark(const std::string &name) {
  auto b = registry().get("benchmark://nn-ops/" + name);
  EXPECT_TRUE(b.ok()) << b.status();
  return b.ok() ? *b : nullptr;
}

namespace {
int64_t tileValue(const env::SessionConfig &c, int64_t size) {
  if (size == 0) return 0;
  auto it = std::find(c.tileSizes.begin(), c.tileSizes.end(), size);
  EXPECT_NE(it, c.tileSizes.end()) << "tile size " << size << " is not a candidate";
  return (it - c.tileSizes.begin()) + 1;
}
}  // namespace

std::vector<int64_t> act(const env::Session &s, env::ActionType type, std::vector<int64_t> sizes, int64_t pointer,
                         int64_t unroll) {
  const env::SessionConfig &c = s.config();
  std::vector<int64_t> v(2 + c.maxLoops, 0);
  v[0] = static_cast<int64_t>(type);
  for (size_t i = 0; i < sizes.size(); ++i) v[1 + i] = tileValue(c, sizes[i]);
  if (unroll) v[c.maxLoops] = tileValue(c, unroll);
  v.back() = pointer;
  return v;
}

std::string applyOrWhy(mlir::ModuleOp payload, llvm::ArrayRef<transforms::Fragment> fragments) {
  support::DiagnosticCapture capture;
  if (mlir::succeeded(transforms::applyFragments(payload, fragments))) return "";
  std::string why = capture.take();
  return why.empty() ? "failed without a diagnostic" : why;
}

int64_t pickLegal(const std::vector<uint8_t> &mask, std::mt19937_64 &rng) {
  std::vector<int64_t> legal;
  for (size_t v = 0; v < mask.size(); ++v)
    if (mask[v]) legal.push_back(static_cast<int64_t>(v));
  return legal.empty() ? 0 : legal[std::uniform_int_distribution<size_t>(0, legal.size() - 1)(rng)];
}

}  // namespace mlir_rl::testing

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
