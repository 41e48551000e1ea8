// Shared fixtures for the unit tests: one MLIRContext, the built-in benchmarks and an evaluation service.
#pragma once

#include <memory>
#include <random>

#include "mlir/IR/MLIRContext.h"

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "env/Session.h"
#include "transforms/Transform.h"

namespace mlir_rl::testing {

mlir::MLIRContext *context();
env::BenchmarkRegistry &registry();
env::EvaluationService &evaluator();
std::shared_ptr<const env::Benchmark> benchmark(const std::string &name);  // name inside nn-ops

// An action vector from tile *sizes* (not head values): `sizes[i]` for loop i (0: not tiled), `pointer` for the
// interchange head, `unroll` for UNROLL's factor (head tile_{L-1}).
std::vector<int64_t> act(const env::Session &s, env::ActionType type, std::vector<int64_t> sizes = {},
                         int64_t pointer = 0, int64_t unroll = 0);

// Applies `fragments` to `payload`: "" when they applied, else the diagnostics they emitted.
std::string applyOrWhy(mlir::ModuleOp payload, llvm::ArrayRef<transforms::Fragment> fragments);

// A value the mask allows, drawn uniformly (0 when it allows none).
int64_t pickLegal(const std::vector<uint8_t> &mask, std::mt19937_64 &rng);

}  // namespace mlir_rl::testing
