// Transformations on one tagged linalg op, expressed as Transform-dialect fragments.
//
// Every transformation in this folder has two halves:
//   * a legality check on the op as it is now (feeds the action masks), and
//   * a fragment of Transform-dialect IR that performs it.
// Fragments are applied to a clone of the payload by `applyFragments` and concatenated by `buildScript` into the
// exportable schedule that `mlir-opt --transform-interpreter` replays on the original benchmark.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"

namespace mlir {
class Operation;
namespace linalg {
class LinalgOp;
}
}  // namespace mlir

namespace mlir_rl::transforms {

// Name of the discardable attribute that tags each schedulable linalg op with a stable integer.
inline constexpr const char kOpTagAttr[] = "rl.op";

// A Transform-dialect fragment: statements that use the handle `%root` (the payload module) and define values
// whose names all start with `%<prefix>_`, so fragments of one schedule never clash.
struct Fragment {
  std::string text;
};

// Statement matching the op tagged `tag` into `%<prefix>_op`.
std::string matchTaggedOp(int64_t tag, llvm::StringRef prefix);

// Statements re-attaching tag `tag` to the op held by `%<handle>` (for transformations that rebuild the op, such
// as generalization, and drop its discardable attributes).
std::string retag(llvm::StringRef handle, int64_t tag, llvm::StringRef prefix);

// Wraps fragments into a module holding `@__transform_main`, the entry point `--transform-interpreter` runs.
std::string buildScript(llvm::ArrayRef<Fragment> fragments);

// Applies the fragments to `payload` in place. On failure returns the interpreter's diagnostics in `error`; the
// payload may then be partially transformed, so callers apply to a clone.
mlir::LogicalResult applyFragments(mlir::ModuleOp payload, llvm::ArrayRef<Fragment> fragments, std::string &error);

// Finds the linalg op carrying tag `tag` (null when there is none, e.g. after vectorization consumed it).
mlir::linalg::LinalgOp findTaggedOp(mlir::ModuleOp module, int64_t tag);

// Formats a list of integers as `[a, b, c]`.
std::string formatList(llvm::ArrayRef<int64_t> values);

// ---- Tiling.cpp: loops of the op tiled with scf.for -----------------------------------------------------------
// A tile size is legal for a loop when it is 0 (do not tile) or a divisor of the loop's static bound.
bool isLegalTileSize(int64_t bound, int64_t size);
Fragment tilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix);

// ---- ParallelTiling.cpp: parallel loops tiled with scf.forall, reduction loops with scf.for -------------------
// Reduction loops never go to scf.forall (that would race). Returns the fragment; `sizes` are per loop.
Fragment parallelTilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                                llvm::StringRef prefix);
// True when the op already sits inside an scf.forall (nested parallelism is refused).
bool isInsideForall(mlir::Operation *op);

// ---- Interchange.cpp: permutation of the op's loops (generalizes named ops first) -----------------------------
bool isPermutation(llvm::ArrayRef<int64_t> permutation);
Fragment interchangeFragment(int64_t tag, llvm::ArrayRef<int64_t> permutation, llvm::StringRef prefix);

// ---- Vectorization.cpp: the op becomes vector operations ------------------------------------------------------
// Empty string when the op can be vectorized with register-sized vectors, else the reason it cannot.
std::string vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements);
Fragment vectorizationFragment(int64_t tag, llvm::StringRef prefix);

}  // namespace mlir_rl::transforms
