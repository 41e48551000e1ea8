// Observation features of one linalg op (MLIR RL's op description): loop bounds and iterator types, the load and
// store access matrices (affine coefficients of the indexing maps), counts of arithmetic ops in the body, and the
// op's producer.
//
// Everything here reads the op and its use-def chains only: no IR printing, no module walk. Session::observe()
// calls it on every step for the op under the cursor and for its producer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "llvm/ADT/ArrayRef.h"

#include "env/Benchmark.h"
#include "env/Config.h"
#include "env/Tensor.h"

namespace mlir_rl::transforms {
class LoopRanges;
}

namespace mlir {
class AffineExpr;
namespace linalg {
class LinalgOp;
}
}  // namespace mlir

namespace mlir_rl::env {

// Columns of op_counts (rows: 0 floating-point ops, 1 integer/index ops).
enum class ArithKind { Add = 0, Sub, Mul, Div, Exp, Max, Other };
inline constexpr int kNumArithKinds = 7;

// The features of one op, laid out as the observation tensors (row-major). Default: zeros (no op), access ranks -1.
struct OpFeatures {
  OpFeatures(int maxLoops, int maxAccesses);

  int maxLoops, maxAccesses;
  std::vector<float> opType;       // [kNumOpFamilies] one-hot OpFamily
  std::vector<int64_t> bounds;     // [L] static loop bounds, 0 past the last loop (and for dynamic bounds)
  std::vector<float> boundsLog2;   // [L] log2(1 + bound)
  std::vector<int32_t> iterators;  // [L] 0 none, 1 parallel, 2 reduction
  std::vector<int32_t> loads;   // [A, L, L + 1] per input operand: one row per tensor dim, columns = loops + constant
  std::vector<int32_t> stores;  // [A, L, L + 1] per init (output) operand, same layout
  std::vector<int32_t> accessRanks;   // [2, A] rank of each load (row 0) / store (row 1); -1: no such access
  std::vector<int32_t> opCounts;      // [2, kNumArithKinds] arith/math ops in the body, float row then integer row
  std::vector<uint8_t> vectorizable;  // [1]

  int64_t accessIndex(int access, int dim, int column) const {
    return (static_cast<int64_t>(access) * maxLoops + dim) * (maxLoops + 1) + column;
  }
};

// OpFeatures with the access matrices kept sparse: dense, they are [A, L, L + 1] int32 each (≈4.4 KiB for L = 12,
// A = 7) and mostly zeros, and facts stay in memory as long as their state.
class CompactFeatures {
 public:
  CompactFeatures(int maxLoops, int maxAccesses) : rest_(maxLoops, maxAccesses) { clearMatrices(); }
  explicit CompactFeatures(const OpFeatures &features);
  OpFeatures expand() const;

 private:
  void clearMatrices() {
    rest_.loads = {};
    rest_.stores = {};
  }
  OpFeatures rest_;                                          // everything but loads and stores
  std::vector<std::pair<int32_t, int32_t>> loads_, stores_;  // (flat index, value) of their non-zero entries
};

// Fills bounds, iterators, access matrices, access ranks and op counts of `op` (opType and vectorizable are the
// caller's: they depend on the schedule and on the mask). `ranges` memoizes the op's loop ranges.
void extractOpFeatures(mlir::linalg::LinalgOp op, OpFeatures &out);
void extractOpFeatures(mlir::linalg::LinalgOp op, OpFeatures &out, transforms::LoopRanges &ranges);

// The producer of `op`: the scheduled linalg op (tagged rl.op, so never linalg.fill) that defines its first operand
// having one — inputs in order, then inits. Values are traced back through what the transformations insert
// (tensor.extract_slice, loop-carried block arguments of scf.for / scf.forall, results of tiled loops), so the
// producer stays the same while the op is being tiled. Null when there is none.
mlir::linalg::LinalgOp findProducer(mlir::linalg::LinalgOp op);

// Coefficients of an affine expression that is linear in the dims: adds them to `coefficients[d]` (dims beyond
// the array are dropped) and the constant term to `constant`. False for mod, floordiv, ceildiv, symbols and
// products of dims (the outputs are then unspecified).
bool linearCoefficients(mlir::AffineExpr expr, llvm::MutableArrayRef<int64_t> coefficients, int64_t &constant);

// Counts an op name (e.g. "arith.addf") found in a body: the kind it falls under, or false when it is no
// arithmetic (constants, yields, linalg.index, ops of other dialects).
bool classifyArith(llvm::StringRef opName, ArithKind &kind);

}  // namespace mlir_rl::env
