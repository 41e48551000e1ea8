// Shared fixtures for the unit tests: one MLIRContext, the built-in benchmarks and an evaluation service.
#pragma once

#include <memory>

#include "mlir/IR/MLIRContext.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"

namespace mlir_rl::testing {

mlir::MLIRContext *context();
env::BenchmarkRegistry &registry();
env::EvaluationService &evaluator();
std::shared_ptr<const env::Benchmark> benchmark(const std::string &name);  // name inside nn-ops

}  // namespace mlir_rl::testing
