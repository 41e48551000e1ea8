// Split reduction: a reduction read contiguously by its inputs (a matrix-vector product with the matrix in PyTorch's
// layout, y[n] += x[k] * W[n, k]) is split into vector lanes: `transform.structured.split_reduction` with
// `inner_parallel` makes k = (k / w) * w + lane, so the op becomes partial[.., lane] += x[k / w, lane] * W[n, k / w,
// lane] with the lane loop innermost and parallel, contiguous in every operand, and the w partial sums of each output
// are added once at the end by a small combining op. TILING and VECTORIZATION then keep one vector of partial sums
// per output row in registers for the whole reduction; without the split, a vector along n gathers W with stride K and
// a vector along k needs a horizontal sum at every step. The split op keeps the tag; the fill of the partial sums and
// the combining op are left untagged (not in the schedule), and the combining op is vectorized in the same step. w is
// one 64-byte vector (16 f32, 8 f64), halved until it divides the reduction (at least 4). ResNet-18's classifier (1x512
// by 1000x512) split, tiled [0, 8, 1, 0] and vectorized: 0.031 ms, against 0.076 ms for the best schedule any search
// had found without it (Sapphire Rapids, `mlir-rl-cli replay --parallel=1 --evaluation_cache=bypass`, both in one run).
#include "transforms/Transformation.h"

#include "mlir/Analysis/SliceAnalysis.h"
#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"

namespace mlir_rl::transforms {

namespace {

constexpr int64_t kLaneBytes = 64;  // one AVX-512 vector

// The reduction loop SPLIT_REDUCTION splits and its lane count, or why there is none.
struct SplitPlan {
  int loop = -1;
  int64_t lanes = 0;
  int64_t insertDimension = 0;  // where the lanes go in the partial result: innermost
  Refusal refusal;
};

SplitPlan planSplit(mlir::linalg::LinalgOp op, llvm::ArrayRef<int64_t> bounds) {
  SplitPlan plan;
  auto refuse = [&](std::string why) {
    plan.refusal = std::move(why);
    return plan;
  };
  if (Refusal r = wholeOpRewriteRefusal(op, bounds, "splitting a reduction")) return refuse(*r);
  if (op.getNumReductionLoops() != 1)
    return refuse("splitting applies to ops with exactly one reduction loop (this one has " +
                  std::to_string(op.getNumReductionLoops()) + ")");
  mlir::OpOperand *init = op.getDpsInitOperand(0);
  auto type = mlir::dyn_cast<mlir::ShapedType>(init->get().getType());
  if (!type || !type.getElementType().isIntOrFloat()) return refuse("the op's output is not a tensor of numbers");
  // The body must be a reduction MLIR knows how to start from its neutral element (add, mul, max, min, ...).
  llvm::SmallVector<mlir::Operation *, 4> combiners;
  if (!mlir::matchReduction(op.getRegionOutputArgs(), 0, combiners) || combiners.size() != 1 ||
      !mlir::arith::getNeutralElement(combiners[0]))
    return refuse("the op's body is not a single combining operation with a neutral element");
  llvm::SmallVector<unsigned> reductions;
  op.getReductionDims(reductions);
  int loop = static_cast<int>(reductions.front());
  // Lanes along the reduction only pay when an input reads it contiguously.
  bool contiguous = false;
  for (mlir::OpOperand *in : op.getDpsInputOperands()) {
    mlir::AffineMap map = op.getMatchingIndexingMap(in);
    if (map.getNumResults() > 0 && map.getDimPosition(map.getNumResults() - 1) == static_cast<unsigned>(loop))
      contiguous = true;
  }
  if (!contiguous) return refuse("no input reads the reduction loop contiguously: its lanes would be gathered");
  int64_t bytes = std::max<int64_t>(1, type.getElementTypeBitWidth() / 8);
  int64_t lanes = kLaneBytes / bytes;
  lanes = largestPowerOfTwoDividing(bounds[loop], lanes);
  if (lanes < 4 || bounds[loop] <= lanes)
    return refuse("the reduction loop (" + std::to_string(bounds[loop]) +
                  ") has no multiple of 4 lanes up to a vector's width that divides it and leaves more than one step");
  plan.loop = loop;
  plan.lanes = lanes;
  plan.insertDimension = type.getRank();
  return plan;
}

class SplitReduction final : public Transformation {
 public:
  llvm::StringRef name() const override { return "SPLIT_REDUCTION"; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    if (view.ops.size() != 1) return std::string("splitting applies to an op that has not been split into copies");
    return planSplit(view.op(), view.bounds()).refusal;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &,
                                                llvm::StringRef prefix) const override {
    SplitPlan plan = planSplit(view.op(), view.bounds());
    if (plan.refusal) {
      view.op()->emitError(*plan.refusal);
      return mlir::failure();
    }
    std::string p = prefix.str();
    std::string text = matchTaggedOp(view.tag, prefix);
    text += "    %" + p + "_init, %" + p + "_fill, %" + p + "_split, %" + p +
            "_combine = transform.structured.split_reduction %" + p +
            "_op { split_factor = " + std::to_string(plan.lanes) +
            ", insert_split_dimension = " + std::to_string(plan.insertDimension) +
            ", inner_parallel } : (!transform.any_op) -> (!transform.any_op, !transform.any_op, !transform.any_op, "
            "!transform.any_op)\n";
    text += retag(p + "_split", view.tag, prefix);
    // The combining op (outputs x lanes, the lanes reduced) is not in the schedule, and left scalar it adds each
    // output's partial sums one after another. It is vectorized here: up to 16 outputs along the innermost output
    // dimension (the largest power of two dividing it) by all lanes per step, one horizontal sum per output.
    llvm::SmallVector<int64_t> sizes(plan.insertDimension + 1, 1);
    sizes.back() = 0;
    auto output = mlir::cast<mlir::ShapedType>(view.op().getDpsInitOperand(0)->get().getType());
    if (plan.insertDimension > 0)
      sizes[plan.insertDimension - 1] = largestPowerOfTwoDividing(output.getShape().back(), 16);
    text += tileAndVectorizeStatements(p + "_combine", sizes, prefix, "combine_tiled");
    return std::optional<Fragment>(Fragment{text});
  }
  std::string describeArgs(const OpView &view, const ActionArgs &) const override {
    SplitPlan plan = planSplit(view.op(), view.bounds());
    if (plan.refusal) return "";
    return " loop " + std::to_string(plan.loop) + " into " + std::to_string(plan.lanes) + " lanes";
  }
};

}  // namespace

const Transformation &makeSplitReduction() {
  static const SplitReduction t;
  return t;
}

}  // namespace mlir_rl::transforms
