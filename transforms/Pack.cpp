// Packing: a contraction whose output's contiguous loop is not contiguous in one of its inputs (matmul_transpose_b:
// C[m, n] += A[m, k] * B[n, k], where a vector along n would gather B) is packed along that loop by one vector's
// width w (64 bytes of elements): `transform.structured.pack` splits the loop into (n / w, w), so B becomes
// B[n / w, k, w] (its block of w rows, stored column by column) and C becomes C[m, n / w, w]; `lower_pack` /
// `lower_unpack` turn the packs into a linalg.transpose of B (a blocked transposition, 64-byte rows) and reshapes,
// and the unpack into a copy of the result. The packed contraction takes over the op's tag; the transposition and the
// copy are left untagged (not in the schedule), and the transposition is vectorized in the same step. Afterwards its
// innermost loop is the w-wide one, contiguous in every operand: TILING and VECTORIZATION make it full-width vectors
// (BERT's FFN up-projection with its bias and GELU: 7.4 ms for the best unpacked schedule a search found, 4.9 ms
// packed, on a Rocket Lake core).
#include "transforms/Transformation.h"

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"

namespace mlir_rl::transforms {

namespace {

constexpr int64_t kPackBytes = 64;  // one AVX-512 vector

// The loop PACK splits and its width, or why there is none.
struct PackPlan {
  int loop = -1;
  int64_t width = 0;
  Refusal refusal;
};

PackPlan planPack(mlir::linalg::LinalgOp op, llvm::ArrayRef<int64_t> bounds) {
  PackPlan plan;
  auto refuse = [&](std::string why) {
    plan.refusal = std::move(why);
    return plan;
  };
  if (Refusal r = wholeOpRewriteRefusal(op, bounds, "packing")) return refuse(*r);
  if (op.getNumReductionLoops() == 0) return refuse("packing applies to contractions (ops with a reduction loop)");
  mlir::OpOperand *init = op.getDpsInitOperand(0);
  auto type = mlir::dyn_cast<mlir::ShapedType>(init->get().getType());
  if (!type || type.getRank() == 0 || !type.getElementType().isIntOrFloat())
    return refuse("the op's output is not a tensor of numbers");
  mlir::AffineMap outMap = op.getMatchingIndexingMap(init);
  auto last = mlir::dyn_cast<mlir::AffineDimExpr>(outMap.getResults().back());
  if (!last) return refuse("the output's innermost index is not a loop");
  int loop = static_cast<int>(last.getPosition());
  // Some input must use the loop at another place than its innermost index (a vector along it would gather).
  bool strided = false;
  for (mlir::OpOperand *in : op.getDpsInputOperands()) {
    mlir::AffineMap map = op.getMatchingIndexingMap(in);
    if (map.getNumResults() == 0) continue;
    for (unsigned r = 0; r + 1 < map.getNumResults(); ++r)
      if (map.getDimPosition(r) == static_cast<unsigned>(loop)) strided = true;
  }
  if (!strided)
    return refuse("the output's contiguous loop is contiguous in every input already: packing would change nothing");
  int64_t bytes = std::max<int64_t>(1, type.getElementTypeBitWidth() / 8);
  int64_t width = kPackBytes / bytes;
  width = largestPowerOfTwoDividing(bounds[loop], width);
  if (width < 4 || bounds[loop] <= width)
    return refuse("the output's contiguous loop (" + std::to_string(bounds[loop]) +
                  ") has no multiple of 4 elements up to a vector's width that divides it and leaves blocks");
  plan.loop = loop;
  plan.width = width;
  return plan;
}

// An input that uses the loop before its innermost index is really transposed by the lowered pack (B[n, k] ->
// B[n / w, k, w]). Left scalar, that transposition reads the input with a stride of a row per element, and vectorizing
// it saved 7 % of BERT's FFN up (B 3072 x 768; figures below). It is vectorized here, one w x w block per step: all
// leading loops 1, the input's innermost loop by w (halved until it divides, at least 4), the block loop whole.
// BERT FFN up, servers before and after alternating (`mlir-rl-cli replay --parallel=1 --evaluation_cache=bypass`):
// `T[4,16] V T[1,16] V PACK T[16,2,1] V` 4.91-4.96 -> 4.56-4.58 ms; the report's best, `T[4,8] V T[1,16] V PACK
// T[16,2,1] T[2,1] T[1] V`, 8.78-8.87 -> 4.43-4.62 ms; matmul_transpose_b 128x768x3072 `PACK T[16,2,1] V` 5.11-5.13
// -> 4.47-4.49 ms.
std::string vectorizedTransposition(mlir::OpOperand &operand, mlir::AffineMap map, const PackPlan &plan,
                                    const std::string &handle) {
  auto type = mlir::dyn_cast<mlir::ShapedType>(operand.get().getType());
  unsigned rank = map.getNumResults();
  if (!type || !type.hasStaticShape() || rank == 0 || map.getDimPosition(rank - 1) == static_cast<unsigned>(plan.loop))
    return "";  // the loop is the operand's innermost index: the lowered pack only reshapes and copies
  int64_t tile = largestPowerOfTwoDividing(type.getShape().back(), plan.width);
  if (tile < 4) return "";
  llvm::SmallVector<int64_t> sizes(rank + 1, 1);
  sizes[rank - 1] = tile;
  sizes[rank] = 0;
  return "    %" + handle + "_t = transform.cast %" + handle +
         "_transpose : !transform.op<\"linalg.transpose\"> to !transform.any_op\n" +
         tileAndVectorizeStatements(handle + "_t", sizes, handle, "tblocks");
}

class Pack final : public Transformation {
 public:
  llvm::StringRef name() const override { return "PACK"; }
  Refusal refusal(const OpView &view, const TileLegality &) const override {
    if (view.ops.size() != 1) return std::string("packing applies to an op that has not been split into copies");
    return planPack(view.op(), view.bounds()).refusal;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &,
                                                llvm::StringRef prefix) const override {
    mlir::linalg::LinalgOp op = view.op();
    PackPlan plan = planPack(op, view.bounds());
    if (plan.refusal) {
      op->emitError(*plan.refusal);
      return mlir::failure();
    }
    std::string p = prefix.str();
    std::string sizes;
    for (int i = 0; i < view.numLoops(); ++i)
      sizes += (i ? ", " : "") + std::to_string(i == plan.loop ? plan.width : 0);
    std::string text = matchTaggedOp(view.tag, prefix);
    text += "    %" + p + "_packed = transform.structured.pack %" + p + "_op packed_sizes = [" + sizes +
            "] : (!transform.any_op) -> (!transform.op<\"linalg.generic\">)\n";
    // Every operand that uses the loop got a tensor.pack (in operand order); lower each, then the unpack of the
    // result.
    const std::string packTypes =
        "(!transform.op<\"tensor.pack\">) -> (!transform.op<\"tensor.pad\">, !transform.op<\"tensor.expand_shape\">, "
        "!transform.op<\"linalg.transpose\">)\n";
    for (mlir::OpOperand &operand : op->getOpOperands()) {
      mlir::AffineMap map = op.getMatchingIndexingMap(&operand);
      bool uses = false;
      for (unsigned r = 0; r < map.getNumResults(); ++r)
        uses |= map.getDimPosition(r) == static_cast<unsigned>(plan.loop);
      if (!uses) continue;
      std::string n = p + "_p" + std::to_string(operand.getOperandNumber());
      text += "    %" + n + " = transform.get_producer_of_operand %" + p + "_packed[" +
              std::to_string(operand.getOperandNumber()) +
              "] : (!transform.op<\"linalg.generic\">) -> !transform.op<\"tensor.pack\">\n";
      text += "    %" + n + "_pad, %" + n + "_expand, %" + n + "_transpose = transform.structured.lower_pack %" + n +
              " : " + packTypes;
      text += vectorizedTransposition(operand, map, plan, n);
    }
    text += "    %" + p + "_unpack = transform.get_consumers_of_result %" + p +
            "_packed[0] : (!transform.op<\"linalg.generic\">) -> !transform.op<\"tensor.unpack\">\n";
    text += "    %" + p + "_u_empty, %" + p + "_u_transpose, %" + p + "_u_collapse, %" + p +
            "_u_slice = transform.structured.lower_unpack %" + p +
            "_unpack : (!transform.op<\"tensor.unpack\">) -> (!transform.op<\"tensor.empty\">, "
            "!transform.op<\"linalg.transpose\">, !transform.op<\"tensor.collapse_shape\">, "
            "!transform.op<\"tensor.extract_slice\">)\n";
    text += "    %" + p + "_contraction = transform.cast %" + p +
            "_packed : !transform.op<\"linalg.generic\"> to !transform.any_op\n";
    text += retag(p + "_contraction", view.tag, prefix);
    return std::optional<Fragment>(Fragment{text});
  }
  std::string describeArgs(const OpView &view, const ActionArgs &) const override {
    PackPlan plan = planPack(view.op(), view.bounds());
    if (plan.refusal) return "";
    return " loop " + std::to_string(plan.loop) + " by " + std::to_string(plan.width);
  }
};

}  // namespace

Refusal wholeOpRewriteRefusal(mlir::linalg::LinalgOp op, llvm::ArrayRef<int64_t> bounds, llvm::StringRef rewrite) {
  std::string what = rewrite.str();
  if (!op) return std::string("no op under the cursor");
  if (!op.hasPureTensorSemantics()) return std::string("the op does not work on tensors");
  if (op.getNumDpsInits() != 1) return what + " needs an op with one output";
  if (op->getParentOfType<mlir::scf::ForOp>() || op->getParentOfType<mlir::scf::ForallOp>())
    return what + " applies before tiling: the op is inside a loop";
  for (mlir::AffineMap map : op.getIndexingMapsArray())
    if (!map.isProjectedPermutation()) return what + " needs indexing maps that are projected permutations";
  for (int64_t b : bounds)
    if (b <= 0) return std::string("the op has dynamic shapes");
  return std::nullopt;
}

const Transformation &makePack() {
  static const Pack t;
  return t;
}

}  // namespace mlir_rl::transforms
