// Tiled parallelization: parallel loops are tiled with scf.forall (lowered to OpenMP), reduction loops with scf.for.
// Reductions never go to scf.forall: MLIR accepts it and produces a data race (../shared/notes/mlir19.md).
#include "transforms/Transform.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir_rl::transforms {

bool isInsideForall(mlir::Operation *op) { return op && op->getParentOfType<mlir::scf::ForallOp>() != nullptr; }

Fragment parallelTilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                                llvm::StringRef prefix) {
  std::vector<int64_t> parallelSizes(sizes.begin(), sizes.end());
  std::vector<int64_t> reductionSizes(sizes.size(), 0);
  bool anyParallel = false;
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i < isReduction.size() && isReduction[i]) {
      reductionSizes[i] = sizes[i];
      parallelSizes[i] = 0;
    }
    anyParallel |= parallelSizes[i] != 0;
  }
  std::string p = prefix.str();
  if (!anyParallel) {
    // Nothing to parallelize: what remains is plain tiling of the reduction loops.
    return tilingFragment(tag, reductionSizes, prefix);
  }
  std::string text = matchTaggedOp(tag, prefix);
  text += "    %" + p + "_par, %" + p + "_forall = transform.structured.tile_using_forall %" + p +
          "_op tile_sizes " + formatList(parallelSizes) +
          " : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n";
  text += tileUsingForStatement(p + "_par", reductionSizes, prefix, "red");
  return {text};
}

}  // namespace mlir_rl::transforms
