// Tiling: the op's loops are tiled with scf.for; a size of 0 leaves a loop untiled.
#include "transforms/Transform.h"

#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Utils/StaticValueUtils.h"

namespace mlir_rl::transforms {

bool isLegalTileSize(int64_t bound, int64_t size) {
  if (size == 0) return true;
  // Sizes that do not divide the bound leave partial tiles with dynamic shapes, which later block vectorization.
  return size > 0 && bound > 0 && size <= bound && bound % size == 0;
}

int loopDepth(mlir::Operation *op) {
  int depth = 0;
  for (mlir::Operation *p = op ? op->getParentOp() : nullptr; p; p = p->getParentOp()) {
    if (mlir::isa<mlir::scf::ForallOp>(p)) {
      ++depth;
    } else if (auto loop = mlir::dyn_cast<mlir::scf::ForOp>(p)) {
      std::optional<int64_t> trips =
          mlir::constantTripCount(loop.getLowerBound(), loop.getUpperBound(), loop.getStep());
      depth += !trips || *trips != 1;
    }
  }
  return depth;
}

Fragment tilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix) {
  int numLoops = 0;
  for (int64_t s : sizes) numLoops += s != 0;
  std::string p = prefix.str();
  if (numLoops == 0) return {"    // " + p + ": tiling with all sizes 0 leaves the op unchanged\n"};
  std::string text = matchTaggedOp(tag, prefix);
  text += tileUsingForStatement(p + "_op", sizes, prefix, "tiled");
  return {text};
}

}  // namespace mlir_rl::transforms
