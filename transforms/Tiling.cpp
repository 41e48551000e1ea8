// Tiling: the op's loops are tiled with scf.for; a size of 0 leaves a loop untiled.
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
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

TileLegality tileLegalityWith(const OpView &view, const SizeRule &rule) {
  TileLegality t;
  int L = view.maxLoops, K = 1 + static_cast<int>(view.tileSizes.size());
  t.rows.assign(L, std::vector<uint8_t>(K, 0));
  for (auto &row : t.rows) row[0] = 1;  // "no tiling" is always a legal value
  if (view.ops.empty()) return t;
  std::vector<llvm::ArrayRef<int64_t>> allBounds;
  for (mlir::linalg::LinalgOp o : view.ops) allBounds.push_back(view.ranges->of(o));
  std::vector<bool> isReduction = view.isReduction();
  int numLoops = view.numLoops();
  // Loop levels left before bufferization gets slow (kMaxLoopDepth): each loop tiled to a size below its bound adds
  // one (parallelization adds one scf.forall for all its parallel loops, but the tile heads are shared). When fewer
  // levels are left than loops could be tiled, only the first loops that can shrink keep sizes below their bound.
  int levelsLeft = kMaxLoopDepth - view.depth();
  for (int i = 0; i < std::min(numLoops, L); ++i) {
    bool loopShrinks = false;
    for (int k = 1; k < K; ++k) {
      SizeVerdict v = rule(allBounds, i, view.tileSizes[k - 1]);
      if (!v.legal) continue;
      if (v.shrinks && levelsLeft <= 0) {
        t.depthLimited = true;
        t.parallelDepthLimited |= !isReduction[i];
        continue;
      }
      t.rows[i][k] = 1;
      if (v.shrinks) {
        loopShrinks = true;
        t.anyShrinks = true;
        if (!isReduction[i]) t.anyParallelShrinks = true;
      }
    }
    levelsLeft -= loopShrinks;
  }
  return t;
}

TileLegality tileLegality(const OpView &view) {
  // A size must divide loop i of every copy of the op.
  return tileLegalityWith(view, [](llvm::ArrayRef<llvm::ArrayRef<int64_t>> allBounds, int i, int64_t size) {
    SizeVerdict v{true, false};
    for (const auto &b : allBounds) {
      if (i >= static_cast<int>(b.size()) || mlir::ShapedType::isDynamic(b[i]) || !isLegalTileSize(b[i], size))
        return SizeVerdict{false, false};
      v.shrinks |= size < b[i];
    }
    return v;
  });
}

std::string tooDeepReason(int depth) {
  return "the op is inside " + std::to_string(depth) + " loop levels; MLIR 19's bufferization doubles its time " +
         "with each level, so transformations may not take it past " + std::to_string(kMaxLoopDepth);
}

std::string describeSizes(const OpView &view, const ActionArgs &args) { return " sizes " + formatList(args.tileSizes); }

namespace {

class Tiling final : public Transformation {
 public:
  llvm::StringRef name() const override { return "TILING"; }
  Heads heads() const override { return Heads::Tiles; }
  Refusal refusal(const OpView &view, const TileLegality &tiles) const override {
    if (!tiles.anyShrinks)
      return tiles.depthLimited ? tooDeepReason(view.depth())
                                : "no loop has a tile size smaller than its bound that divides it";
    if (int copies = view.copies(); copies > 1) return unrolledCopiesReason(copies);
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    if (llvm::all_of(args.tileSizes, [](int64_t s) { return s == 0; })) return std::optional<Fragment>();
    return std::optional<Fragment>(tilingFragment(view.tag, args.tileSizes, prefix));
  }
  std::string describeArgs(const OpView &view, const ActionArgs &args) const override {
    return describeSizes(view, args);
  }
};

}  // namespace

const Transformation &makeTiling() {
  static const Tiling t;
  return t;
}

}  // namespace mlir_rl::transforms
