// Tiled parallelization: parallel loops are tiled with scf.forall (lowered to OpenMP), reduction loops with scf.for.
// Reductions never go to scf.forall: MLIR 19 accepts it and produces a data race.
#include "transforms/Transformation.h"

#include "llvm/ADT/STLExtras.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"

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
  text += "    %" + p + "_par, %" + p + "_forall = transform.structured.tile_using_forall %" + p + "_op tile_sizes " +
          formatList(parallelSizes) + " : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n";
  text += tileUsingForStatement(p + "_par", reductionSizes, prefix, "red");
  return {text};
}

Refusal parallelTilingRefusal(const OpView &view, const TileLegality &tiles, bool checkCopies) {
  if (!tiles.anyParallelShrinks)
    return tiles.parallelDepthLimited ? tooDeepReason(view.depth())
                                      : "no parallel loop has a tile size smaller than its bound";
  if (llvm::any_of(view.ops, [](mlir::linalg::LinalgOp o) { return isInsideForall(o); }))
    return "the op is already inside a parallel loop";
  if (int copies = view.copies(); checkCopies && copies > 1) return unrolledCopiesReason(copies);
  return std::nullopt;
}

namespace {

class TiledParallelization final : public Transformation {
 public:
  llvm::StringRef name() const override { return "TILED_PARALLELIZATION"; }
  Heads heads() const override { return Heads::Tiles; }
  Refusal refusal(const OpView &view, const TileLegality &tiles) const override {
    return parallelTilingRefusal(view, tiles, /*checkCopies=*/true);
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    if (llvm::all_of(args.tileSizes, [](int64_t s) { return s == 0; })) return std::optional<Fragment>();
    std::vector<bool> isReduction = view.isReduction();
    llvm::SmallVector<bool> kinds(isReduction.begin(), isReduction.end());
    return std::optional<Fragment>(parallelTilingFragment(view.tag, args.tileSizes, kinds, prefix));
  }
  std::string describeArgs(const OpView &view, const ActionArgs &args) const override {
    return describeSizes(view, args);
  }
};

}  // namespace

const Transformation &makeTiledParallelization() {
  static const TiledParallelization t;
  return t;
}

}  // namespace mlir_rl::transforms
