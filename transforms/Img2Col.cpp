// Img2col: a 2-D convolution becomes a linalg.generic that packs the sliding windows (the img2col tensor) and a
// contraction over them, with collapse/expand reshapes around it. The contraction takes over the convolution's tag
// (the rewrite builds new ops, which carry no discardable attribute); the packing op is left untagged: it is not in
// the schedule, but TILED_FUSION of the contraction can fuse it.
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir_rl::transforms {

Refusal img2colBlocker(mlir::linalg::LinalgOp op) {
  if (!op) return "no op under the cursor";
  if (!mlir::isa<mlir::linalg::Conv2DNhwcHwcfOp, mlir::linalg::Conv2DNhwcFhwcOp, mlir::linalg::Conv2DNchwFchwOp,
                 mlir::linalg::DepthwiseConv2DNhwcHwcOp>(op.getOperation()))
    return "img2col applies to 2-D NHWC/HWCF, NHWC/FHWC, NCHW/FCHW and depthwise NHWC/HWC convolutions, not " +
           op->getName().getStringRef().str();
  if (!op.hasPureTensorSemantics()) return "the convolution does not work on tensors";
  for (mlir::OpOperand &operand : op->getOpOperands()) {
    auto type = mlir::dyn_cast<mlir::ShapedType>(operand.get().getType());
    if (type && !type.hasStaticShape()) return "the convolution has dynamic shapes";
  }
  // The depthwise rewrite ends with a transposition into a new tensor, so inside an scf.for the loop would no longer
  // yield its own accumulator and one-shot bufferization rejects it.
  if (mlir::isa<mlir::linalg::DepthwiseConv2DNhwcHwcOp>(op.getOperation()) && op->getParentOfType<mlir::scf::ForOp>())
    return "img2col of a depthwise convolution inside an scf.for loop cannot be bufferized in place";
  if (auto dilations = op->getAttrOfType<mlir::DenseIntElementsAttr>("dilations"))
    for (const llvm::APInt &d : dilations.getValues<llvm::APInt>())
      if (d != 1) return "img2col in MLIR 19 supports only unit dilations";
  return std::nullopt;
}

Fragment img2colFragment(int64_t tag, bool depthwise, llvm::StringRef prefix) {
  std::string p = prefix.str();
  const std::string handle = "(!transform.any_op) -> !transform.any_op";
  std::string text = matchTaggedOp(tag, prefix);
  text += "    %" + p + "_im2col, %" + p + "_out = transform.structured.convert_conv2d_to_img2col %" + p +
          "_op : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n";
  // The returned handle is the last op of the replacement: the tensor.expand_shape of the contraction's result, or
  // for depthwise convolutions the transposition back to NHWC that follows that expand_shape.
  std::string source = p + "_out";
  if (depthwise) {
    text += "    %" + p + "_expanded = transform.get_producer_of_operand %" + source + "[0] : " + handle + "\n";
    source = p + "_expanded";
  }
  text += "    %" + p + "_contraction = transform.get_producer_of_operand %" + source + "[0] : " + handle + "\n";
  text += retag(p + "_contraction", tag, prefix);
  return {text};
}

namespace {

class Img2Col final : public Transformation {
 public:
  llvm::StringRef name() const override { return "IMG2COL"; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    for (mlir::linalg::LinalgOp o : view.ops)
      if (Refusal r = img2colBlocker(o)) return r;
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &,
                                                llvm::StringRef prefix) const override {
    bool depthwise = mlir::isa<mlir::linalg::DepthwiseConv2DNhwcHwcOp>(view.op().getOperation());
    return std::optional<Fragment>(img2colFragment(view.tag, depthwise, prefix));
  }
};

}  // namespace

const Transformation &makeImg2Col() {
  static const Img2Col t;
  return t;
}

}  // namespace mlir_rl::transforms
