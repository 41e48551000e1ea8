// What the fuzz targets share: one MLIR context and the built-in benchmarks, and an executor that evaluates nothing
// (evaluation runs in sandboxed worker processes; the targets fuzz what the server itself does with input).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "env/Benchmark.h"
#include "env/Evaluation.h"
#include "mlir/IR/MLIRContext.h"
#include "runners/Executor.h"
#include "support/Context.h"

namespace mlir_rl::fuzz {

class NoExecutor final : public runners::Executor {
 public:
  runners::ExecResult execute(const runners::ExecRequest &) override {
    runners::ExecResult r;
    r.failure = runners::FailureKind::Internal;
    r.message = "evaluation is off while fuzzing";
    return r;
  }
};

struct World {
  std::unique_ptr<mlir::MLIRContext> context = support::createContext();
  env::BenchmarkRegistry benchmarks{context.get(), MLIR_RL_BENCHMARKS_DIR};
  NoExecutor executor;
  env::EvaluationService evaluator{&executor};
  World() { (void)benchmarks.scan(); }
  static World &get() {
    static World *world = new World();  // leaked: MLIR objects outlive static destruction order
    return *world;
  }
};

// Reads fuzz input as a stream of small choices.
class Bytes {
 public:
  Bytes(const uint8_t *data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t next() { return pos_ < size_ ? data_[pos_++] : 0; }
  // A value in [0, n) (0 when n is 0).
  int64_t below(int64_t n) { return n > 0 ? next() % n : 0; }
  std::string rest() {
    std::string s(reinterpret_cast<const char *>(data_ + pos_), size_ - pos_);
    pos_ = size_;
    return s;
  }

 private:
  const uint8_t *data_;
  size_t size_, pos_ = 0;
};

// Small built-in benchmarks of every family, for the targets that play episodes.
inline const char *const kBenchmarks[] = {
    "benchmark://nn-ops/matmul_64x64x64_f32",
    "benchmark://nn-ops/matmul_relu_128x128x128_f32",
    "generator://conv2d_nhwc/1",
    "generator://pooling_max/2",
    "generator://relu/3",
    "generator://matmul/4",
};

}  // namespace mlir_rl::fuzz
