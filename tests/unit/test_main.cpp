#include <gtest/gtest.h>

#include "support/Context.h"
#include "tests/unit/TestSupport.h"

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

}  // namespace mlir_rl::testing

int main(int argc, char **argv) {
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
