// The registry of transformations, and what transformations share: the view of the op under the cursor.
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"

namespace mlir_rl::transforms {

// The transformations in action-type order, one line each. A new one goes last: clients index types by position.
#define MLIR_RL_TRANSFORMATIONS(X) \
  X(NoTransformation)              \
  X(Tiling)                        \
  X(TiledParallelization)          \
  X(Interchange)                   \
  X(Vectorization)                 \
  X(TiledFusion)                   \
  X(Img2Col)                       \
  X(Unroll)                        \
  X(PeeledTiling)                  \
  X(Pack)                          \
  X(SplitReduction)

#define MLIR_RL_DECLARE(Name) const Transformation &make##Name();
MLIR_RL_TRANSFORMATIONS(MLIR_RL_DECLARE)
#undef MLIR_RL_DECLARE

const std::vector<const Transformation *> &registry() {
#define MLIR_RL_ENTRY(Name) &make##Name(),
  static const std::vector<const Transformation *> all = {MLIR_RL_TRANSFORMATIONS(MLIR_RL_ENTRY)};
#undef MLIR_RL_ENTRY
  return all;
}

namespace {

// NO_TRANSFORMATION: the op is done; the cursor moves on (an episode rule, env/Session.cpp). Never refused.
class NoTransformation final : public Transformation {
 public:
  llvm::StringRef name() const override { return "NO_TRANSFORMATION"; }
  Refusal refusal(const OpView &, const TileLegality &) const override { return std::nullopt; }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &, const ActionArgs &, llvm::StringRef) const override {
    return std::optional<Fragment>();
  }
};

}  // namespace

const Transformation &makeNoTransformation() {
  static const NoTransformation t;
  return t;
}

mlir::linalg::LinalgOp OpView::op() const { return ops.empty() ? mlir::linalg::LinalgOp() : ops.front(); }

llvm::ArrayRef<int64_t> OpView::bounds() const { return ops.empty() ? llvm::ArrayRef<int64_t>() : ranges->of(op()); }

int OpView::numLoops() const { return static_cast<int>(bounds().size()); }

std::vector<bool> OpView::isReduction() const {
  std::vector<bool> kinds;
  if (ops.empty()) return kinds;
  for (mlir::utils::IteratorType it : op().getIteratorTypesArray())
    kinds.push_back(it == mlir::utils::IteratorType::reduction);
  return kinds;
}

int OpView::depth() const {
  int d = 0;
  for (mlir::linalg::LinalgOp o : ops) d = std::max(d, loopDepth(o));
  return d;
}

int OpView::copies() const { return maxCopiesPerLoopBody(ops); }

}  // namespace mlir_rl::transforms
