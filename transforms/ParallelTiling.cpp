// Tiled parallelization: parallel loops are tiled with scf.forall (lowered to OpenMP), reduction loops with scf.for.
// Reductions never go to scf.forall: MLIR accepts it and produces a data race (../shared/notes/mlir19.md).
#include "transforms/Transform.h"

#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir_rl::transforms {

bool isInsideForall(mlir::Operation *op) { return op && op->getParentOfType<mlir::scf::ForallOp>() != nullptr; }

SplitSizes splitByLoopKind(llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction) {
  SplitSizes split{std::vector<int64_t>(sizes.begin(), sizes.end()), std::vector<int64_t>(sizes.size(), 0), false};
  for (size_t i = 0; i < sizes.size(); ++i) {
    if (i < isReduction.size() && isReduction[i]) {
      split.reduction[i] = sizes[i];
      split.parallel[i] = 0;
    }
    split.anyParallel |= split.parallel[i] != 0;
  }
  return split;
}

Fragment parallelTilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                                llvm::StringRef prefix) {
  SplitSizes split = splitByLoopKind(sizes, isReduction);
  const std::vector<int64_t> &parallelSizes = split.parallel, &reductionSizes = split.reduction;
  bool anyParallel = split.anyParallel;
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
