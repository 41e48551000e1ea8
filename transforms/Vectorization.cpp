// Vectorization: the op becomes vector operations over its whole (tiled) iteration space, followed by the
// patterns that turn broadcast-multiply-reduce into vector.contract and fold transposed transfers. What remains is
// lowered to the native vector width by the runner.
#include "transforms/Transform.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Linalg/Transforms/Transforms.h"

#include "support/Diagnostics.h"
#include "support/Target.h"

namespace mlir_rl::transforms {

std::string vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements) {
  if (!op) return "no op under the cursor";
  llvm::SmallVector<int64_t> ranges = op.getStaticLoopRanges();
  int64_t elements = 1;
  for (int64_t r : ranges) {
    if (mlir::ShapedType::isDynamic(r)) return "the op has dynamic loop bounds";
    elements *= r;
  }
  if (elements > maxVectorElements)
    return "iteration space of " + std::to_string(elements) + " elements exceeds " +
           std::to_string(maxVectorElements) + " (tile first)";
  int64_t elementBytes = 0;
  for (mlir::OpOperand &operand : op->getOpOperands()) {
    mlir::Type t = mlir::getElementTypeOrSelf(operand.get().getType());
    if (t.isIntOrFloat()) elementBytes = std::max<int64_t>(elementBytes, (t.getIntOrFloatBitWidth() + 7) / 8);
  }
  int64_t nativeBytes = support::nativeVectorBytes();
  if (!ranges.empty() && elementBytes > 0 && ranges.back() * elementBytes > nativeBytes)
    return "innermost loop of " + std::to_string(ranges.back()) + " elements is wider than a " +
           std::to_string(nativeBytes * 8) + "-bit vector register (tile it or interchange)";
  support::DiagnosticCapture quiet;
  if (mlir::failed(mlir::linalg::vectorizeOpPrecondition(op)))
    return "MLIR cannot vectorize " + op->getName().getStringRef().str() + " in this form";
  return "";
}

Fragment vectorizationFragment(int64_t tag, llvm::StringRef prefix) {
  std::string p = prefix.str();
  std::string text = matchTaggedOp(tag, prefix);
  text += "    %" + p + "_func = transform.get_parent_op %" + p +
          "_op {op_name = \"func.func\"} : (!transform.any_op) -> !transform.any_op\n";
  text += "    transform.structured.vectorize %" + p + "_op : !transform.any_op\n";
  text += "    transform.apply_patterns to %" + p + "_func {\n"
          "      transform.apply_patterns.vector.reduction_to_contract\n"
          "      transform.apply_patterns.vector.transfer_permutation_patterns\n"
          "      transform.apply_patterns.vector.cast_away_vector_leading_one_dim\n"
          "      transform.apply_patterns.canonicalization\n"
          "    } : !transform.any_op\n";
  return {text};
}

}  // namespace mlir_rl::transforms
