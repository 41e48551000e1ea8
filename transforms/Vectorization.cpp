// Vectorization: the op becomes vector operations over its whole (tiled) iteration space. The runner's lowering
// then turns broadcast-multiply-reduce into vector.contract, folds transposed transfers and canonicalizes, once per
// candidate (runners/Lowering.cpp: those patterns cost ≈0.8 ms per step when the fragment applied them) and lowers
// what remains to the native vector width.
//
// 2-D convolutions and pooling do not vectorize directly in MLIR 19: their output-height and
// kernel-height loops are tiled to 1 (when they are not 1 already), `transform.structured.decompose` rewrites the op
// to its 1-D form (conv_1d_nwc_wcf, conv_1d_ncw_fcw, depthwise_conv_1d_nwc_wc, pooling_nwc_*, pooling_ncw_*), and
// that is vectorized. Only the forms decompose supports take that path; the limits apply to the 1-D iteration space.
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"

#include "support/Diagnostics.h"
#include "support/Target.h"

namespace mlir_rl::transforms {

namespace {

int64_t largestElementBytes(mlir::linalg::LinalgOp op) {
  int64_t elementBytes = 0;
  for (mlir::OpOperand &operand : op->getOpOperands()) {
    mlir::Type t = mlir::getElementTypeOrSelf(operand.get().getType());
    if (t.isIntOrFloat()) elementBytes = std::max<int64_t>(elementBytes, (t.getIntOrFloatBitWidth() + 7) / 8);
  }
  return elementBytes;
}

// The convolution path: limits on the iteration space of the 1-D op that decomposition leaves.
Refusal convVectorizationBlocker(mlir::linalg::LinalgOp op, llvm::ArrayRef<int64_t> ranges, int ohLoop, int khLoop,
                                 int64_t maxVectorElements) {
  if (!op.hasPureTensorSemantics()) return "the op does not work on tensors";
  int64_t elements = 1;
  for (int i = 0; i < static_cast<int>(ranges.size()); ++i) {
    if (mlir::ShapedType::isDynamic(ranges[i])) return "the op has dynamic loop bounds";
    if (i != ohLoop && i != khLoop) elements *= ranges[i];
  }
  if (elements > maxVectorElements)
    return "iteration space of " + std::to_string(elements) + " elements without output height and kernel height " +
           "exceeds " + std::to_string(maxVectorElements) + " (tile first)";
  // The 1-D vectorizer keeps batch and kernel width as outer (unrolled) dimensions; the others (output width and
  // channels) become vector dimensions that end up innermost after its transpositions, so each must fit a register.
  int64_t elementBytes = largestElementBytes(op), nativeBytes = support::nativeVectorBytes();
  int kwLoop = khLoop + 1;
  for (int i = 1; i < static_cast<int>(ranges.size()); ++i) {
    if (i == ohLoop || i == khLoop || i == kwLoop) continue;
    if (elementBytes > 0 && ranges[i] * elementBytes > nativeBytes)
      return "loop " + std::to_string(i) + " of " + std::to_string(ranges[i]) + " elements is wider than a " +
             std::to_string(nativeBytes * 8) + "-bit vector register (tile it)";
  }
  return std::nullopt;
}

}  // namespace

std::optional<std::pair<int, int>> decomposableConvLoops(mlir::linalg::LinalgOp op) {
  if (!op) return std::nullopt;
  mlir::Operation *o = op.getOperation();
  // Loop orders: conv_2d_nhwc_hwcf (n, oh, ow, f, kh, kw, c); conv_2d_nchw_fchw (n, f, oh, ow, c, kh, kw);
  // depthwise_conv_2d_nhwc_hwc and pooling_nhwc_* (n, oh, ow, c, kh, kw); pooling_nchw_* (n, c, oh, ow, kh, kw).
  if (mlir::isa<mlir::linalg::Conv2DNhwcHwcfOp, mlir::linalg::DepthwiseConv2DNhwcHwcOp, mlir::linalg::PoolingNhwcSumOp,
                mlir::linalg::PoolingNhwcMaxOp, mlir::linalg::PoolingNhwcMinOp>(o))
    return std::pair(1, 4);
  if (mlir::isa<mlir::linalg::Conv2DNchwFchwOp>(o)) return std::pair(2, 5);
  if (mlir::isa<mlir::linalg::PoolingNchwSumOp, mlir::linalg::PoolingNchwMaxOp>(o)) return std::pair(2, 4);
  return std::nullopt;
}

Refusal vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements) {
  LoopRanges ranges;
  return vectorizationBlocker(op, maxVectorElements, ranges);
}

Refusal vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements, LoopRanges &loopRanges) {
  if (!op) return "no op under the cursor";
  if (auto conv = decomposableConvLoops(op))
    return convVectorizationBlocker(op, loopRanges.of(op), conv->first, conv->second, maxVectorElements);
  // Other named convolutions pass MLIR's precondition but fail to vectorize (e.g. conv_2d_nhwc_fhwc); only the 1-D
  // forms (what decomposition produces) vectorize.
  if (mlir::isa<mlir::linalg::ConvolutionOpInterface>(op.getOperation()) &&
      !mlir::isa<mlir::linalg::Conv1DNwcWcfOp, mlir::linalg::Conv1DNcwFcwOp, mlir::linalg::DepthwiseConv1DNwcWcOp,
                 mlir::linalg::PoolingNwcSumOp, mlir::linalg::PoolingNwcMaxOp, mlir::linalg::PoolingNwcMinOp,
                 mlir::linalg::PoolingNcwSumOp, mlir::linalg::PoolingNcwMaxOp>(op.getOperation()))
    return "MLIR cannot vectorize " + op->getName().getStringRef().str() +
           " (no 1-D decomposition for this form; img2col turns it into a vectorizable contraction)";
  llvm::ArrayRef<int64_t> ranges = loopRanges.of(op);
  int64_t elements = 1;
  for (int64_t r : ranges) {
    if (mlir::ShapedType::isDynamic(r)) return "the op has dynamic loop bounds";
    elements *= r;
  }
  if (elements > maxVectorElements)
    return "iteration space of " + std::to_string(elements) + " elements exceeds " + std::to_string(maxVectorElements) +
           " (tile first)";
  int64_t elementBytes = largestElementBytes(op);
  int64_t nativeBytes = support::nativeVectorBytes();
  if (!ranges.empty() && elementBytes > 0 && ranges.back() * elementBytes > nativeBytes)
    return "innermost loop of " + std::to_string(ranges.back()) + " elements is wider than a " +
           std::to_string(nativeBytes * 8) + "-bit vector register (tile it or interchange)";
  // MLIR 19 forwards a vector.transfer_write to a later transfer_read of the written tensor (a canonicalization) by
  // composing the read's permutation with the write's instead of with its inverse. That is only right when the write
  // permutation is its own inverse; otherwise it yields invalid IR or, when the shapes happen to agree, transposed
  // data. Writes and reads of one tensor meet when unrolled copies of the op follow each other or when a vectorized
  // consumer reads this op's result, so outputs whose (compressed) indexing map is not an involution are refused.
  for (mlir::OpOperand &init : op.getDpsInitsMutable()) {
    mlir::AffineMap map = mlir::compressUnusedDims(op.getMatchingIndexingMap(&init));
    if (map.isPermutation() &&
        map.compose(map) != mlir::AffineMap::getMultiDimIdentityMap(map.getNumDims(), op->getContext()))
      return "the output's loop order is a cyclic permutation of its dimensions, which MLIR 19 mishandles when "
             "forwarding vector transfers (interchange so that output loops keep their order or swap in pairs)";
  }
  // A reduction becomes a vector.contract. When the output has a unit dimension that is neither leading (those are
  // dropped) nor last, e.g. batch_matmul with the row loop tiled to 1, MLIR 19's contraction-to-outer-product
  // lowering, broadcast lowering and canonicalization rewrite each other without end (the compile runs out of
  // memory). Checked on random batch-matmul shapes and loop orders: every failing case has such a dimension.
  if (op.getNumReductionLoops() > 0) {
    for (mlir::OpOperand &init : op.getDpsInitsMutable()) {
      llvm::SmallVector<int64_t> dims;
      for (mlir::AffineExpr e : op.getMatchingIndexingMap(&init).getResults())
        if (auto d = mlir::dyn_cast<mlir::AffineDimExpr>(e)) dims.push_back(ranges[d.getPosition()]);
      size_t first = 0;
      while (first < dims.size() && dims[first] == 1) ++first;
      for (size_t i = first; i + 1 < dims.size(); ++i)
        if (dims[i] == 1)
          return "output dimension " + std::to_string(i) +
                 " has extent 1 between larger ones, which MLIR 19's "
                 "contraction lowering cannot handle (tile that loop larger, or tile the leading loops to 1 too)";
    }
  }
  support::DiagnosticCapture quiet;
  if (mlir::failed(mlir::linalg::vectorizeOpPrecondition(op)))
    return "MLIR cannot vectorize " + op->getName().getStringRef().str() + " in this form";
  return std::nullopt;
}

Fragment vectorizationFragment(int64_t tag, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  text += "    transform.structured.vectorize %" + p + "_op : !transform.any_op\n";
  return {text};
}

Fragment vectorizationFragmentFor(llvm::ArrayRef<mlir::linalg::LinalgOp> ops, int64_t tag, llvm::StringRef prefix) {
  if (ops.empty()) return vectorizationFragment(tag, prefix);
  std::optional<std::pair<int, int>> conv = decomposableConvLoops(ops.front());
  if (!conv) return vectorizationFragment(tag, prefix);
  auto [ohLoop, khLoop] = *conv;
  mlir::linalg::LinalgOp first = ops.front();
  std::vector<int64_t> sizes(first.getNumLoops(), 0);
  for (mlir::linalg::LinalgOp op : ops) {
    llvm::SmallVector<int64_t> ranges = op.getStaticLoopRanges();
    if (ranges[ohLoop] != 1) sizes[ohLoop] = 1;
    if (ranges[khLoop] != 1) sizes[khLoop] = 1;
  }
  int numLoops = (sizes[ohLoop] != 0) + (sizes[khLoop] != 0);
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  std::string target = p + "_op";
  if (numLoops > 0) {
    std::string types = "!transform.any_op";
    for (int i = 0; i < numLoops; ++i) types += ", !transform.any_op";
    text += "    %" + p + "_tiled, %" + p + "_loops:" + std::to_string(numLoops) +
            " = transform.structured.tile_using_for %" + p + "_op tile_sizes " + formatList(sizes) +
            " : (!transform.any_op) -> (" + types + ")\n";
    target = p + "_tiled";
  }
  text +=
      "    %" + p + "_1d = transform.structured.decompose %" + target + " : (!transform.any_op) -> !transform.any_op\n";
  text += "    transform.structured.vectorize %" + p + "_1d : !transform.any_op\n";
  return {text};
}

namespace {

class Vectorization final : public Transformation {
 public:
  llvm::StringRef name() const override { return "VECTORIZATION"; }
  bool endsOp() const override { return true; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    for (mlir::linalg::LinalgOp o : view.ops)
      if (Refusal r = vectorizationBlocker(o, view.maxVectorElements, *view.ranges)) return r;
    std::optional<std::pair<int, int>> conv = decomposableConvLoops(view.op());
    if (!conv) return std::nullopt;
    // Vectorizing a convolution tiles its output-height and kernel-height loops to 1 unless they are 1 already: two
    // levels at most, allowed for a pair of unrolled copies sharing a loop body.
    auto notOne = [&](int loop) {
      return llvm::any_of(view.ops, [&](mlir::linalg::LinalgOp o) { return view.ranges->of(o)[loop] != 1; });
    };
    bool tilesFirst = notOne(conv->first) || notOne(conv->second);
    if (int copies = view.copies(); copies > kMaxCopiesForConvVectorization && tilesFirst)
      return unrolledCopiesReason(copies) +
             "; vectorizing a convolution tiles its output-height and kernel-height "
             "loops to 1 first (allowed for up to " +
             std::to_string(kMaxCopiesForConvVectorization) + " copies)";
    if (view.depth() + notOne(conv->first) + notOne(conv->second) > kMaxLoopDepth)
      return tooDeepReason(view.depth()) +
             " (vectorizing a convolution tiles its output-height and kernel-height "
             "loops to 1 first)";
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &,
                                                llvm::StringRef prefix) const override {
    return std::optional<Fragment>(vectorizationFragmentFor(view.ops, view.tag, prefix));
  }
};

}  // namespace

const Transformation &makeVectorization() {
  static const Vectorization t;
  return t;
}

}  // namespace mlir_rl::transforms
