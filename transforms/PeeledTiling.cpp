// PEELED_TILING: the op's loops are tiled with scf.for by sizes that need not divide the loop bounds; every loop a
// size does not divide is peeled (transform.loop.peel), so the main part runs full tiles of static shape (which
// vectorize at the chosen width) and the remainder runs one partial tile, also of static shape. Matmul N=1000 gets
// 16-, 32- or 64-wide tiles (TILING allows only divisors: 8 at most).
//
// Each copy of the op (an earlier peel leaves a main and a remainder copy carrying the same tag) is tiled by its own
// sizes: a copy whose loop is not larger than the size keeps that loop whole, and so does one where the size neither
// divides the loop nor fits in it twice (the main loop would run once and leave two copies in one loop body). The
// mask (`mask_tiles_peeled`) allows a size when the op's loop bounds are static and the size fits in some copy.
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"

namespace mlir_rl::transforms {

int64_t peeledTileSize(int64_t bound, int64_t size) {
  if (size <= 0 || bound <= 0 || size >= bound) return 0;
  return bound % size == 0 || 2 * size <= bound ? size : 0;
}

TileLegality peeledTileLegality(const OpView &view) {
  // Loop i static in every copy, and the size fits in some copy; it shrinks where peeledTileSize tiles the copy.
  return tileLegalityWith(view, [](llvm::ArrayRef<llvm::ArrayRef<int64_t>> allBounds, int i, int64_t size) {
    bool fits = false, shrinks = false;
    for (const auto &b : allBounds) {
      if (i >= static_cast<int>(b.size()) || mlir::ShapedType::isDynamic(b[i])) return SizeVerdict{false, false};
      fits |= size <= b[i];
      shrinks |= peeledTileSize(b[i], size) != 0;
    }
    return SizeVerdict{fits, fits && shrinks};
  });
}

namespace {

class PeeledTiling final : public Transformation {
 public:
  llvm::StringRef name() const override { return "PEELED_TILING"; }
  Heads heads() const override { return Heads::PeeledTiles; }
  Refusal refusal(const OpView &view, const TileLegality &peeled) const override {
    if (!peeled.anyShrinks)
      return peeled.depthLimited ? tooDeepReason(view.depth())
                                 : "no loop is larger than a tile size (twice, when the size does not divide it)";
    if (int copies = view.copies(); copies > 1) return unrolledCopiesReason(copies);
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    std::string p = prefix.str();
    // The sizes of each copy, and which of its tiled loops are peeled (positions among the tiled loops).
    struct CopyPlan {
      std::vector<int64_t> sizes;
      std::vector<int> peeled;
    };
    std::vector<CopyPlan> copies;
    bool anything = false;
    for (mlir::linalg::LinalgOp op : view.ops) {
      llvm::ArrayRef<int64_t> bounds = view.ranges->of(op);
      CopyPlan c;
      int tiled = 0;
      for (size_t i = 0; i < bounds.size(); ++i) {
        int64_t size = i < args.tileSizes.size() ? peeledTileSize(bounds[i], args.tileSizes[i]) : 0;
        c.sizes.push_back(size);
        if (size == 0) continue;
        if (bounds[i] % size != 0) c.peeled.push_back(tiled);
        ++tiled;
      }
      anything |= tiled > 0;
      copies.push_back(std::move(c));
    }
    if (!anything) return std::optional<Fragment>();
    std::string text = matchTaggedOp(view.tag, prefix);
    std::vector<std::string> handles;
    if (copies.size() == 1) {
      handles.push_back(p + "_op");
    } else {
      // transform.structured.match lists the copies in program order, as findTaggedOps does (view.ops).
      std::string names, types;
      for (size_t j = 0; j < copies.size(); ++j) {
        handles.push_back(p + "_copy" + std::to_string(j));
        names += (j ? ", %" : "%") + handles.back();
        types += j ? ", !transform.any_op" : "!transform.any_op";
      }
      text += "    " + names + " = transform.split_handle %" + p + "_op : (!transform.any_op) -> (" + types + ")\n";
    }
    for (size_t j = 0; j < copies.size(); ++j) {
      const CopyPlan &c = copies[j];
      std::string cp = p + "_c" + std::to_string(j);
      text += tileUsingForStatement(handles[j], c.sizes, cp, "tiled");
      if (c.peeled.empty()) continue;
      // The canonicalization scope: the tiled nest's parent (the op's former block owner), taken before peeling.
      text += "    %" + cp + "_scope = transform.get_parent_op %" + cp +
              "_loops#0 : (!transform.any_op) -> !transform.any_op\n";
      // Innermost first: peeling an outer loop then clones the inner loops already peeled.
      for (auto it = c.peeled.rbegin(); it != c.peeled.rend(); ++it) {
        std::string l = cp + "_l" + std::to_string(*it);
        text += "    %" + l + " = transform.cast %" + cp + "_loops#" + std::to_string(*it) +
                " : !transform.any_op to !transform.op<\"scf.for\">\n";
        text += "    %" + l + "_main, %" + l + "_rest = transform.loop.peel %" + l +
                " : (!transform.op<\"scf.for\">) -> (!transform.any_op, !transform.any_op)\n";
      }
      // Folds the partial tile's affine.min bounds to constants and removes one-trip loops: static shapes.
      text += "    transform.apply_patterns to %" + cp +
              "_scope {\n      transform.apply_patterns.canonicalization\n    } : !transform.any_op\n";
    }
    return std::optional<Fragment>(Fragment{text});
  }
  std::string describeArgs(const OpView &view, const ActionArgs &args) const override {
    return describeSizes(view, args);
  }
};

}  // namespace

const Transformation &makePeeledTiling() {
  static const PeeledTiling t;
  return t;
}

}  // namespace mlir_rl::transforms
