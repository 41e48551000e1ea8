// Tiled fusion (MLIR RL's TPF): tiled parallelization of the op plus fusion of its producers into the scf.forall.
//
// Safety: the forall only ever tiles parallel loops (reduction tile 0), so each forall iteration computes complete
// output tiles, and a producer fused into it computes exactly the slice that tile reads. That makes it safe to fuse
// the linalg.fill initializing the destination too. Reduction loops are tiled with scf.for only after fusion, so every
// fused producer sits outside the reduction loops; fusing a fill into a tiled reduction loop would re-initialize the
// accumulator on every iteration (a wrong result in MLIR 19). Producers are only taken from the op's
// own block: an op already tiled by scf.for reads slices and loop-carried values, never a producer directly, so
// fusion never crosses an existing loop (and in particular never a tiled reduction).
//
// Tags: a fused producer keeps its tag on the tiled copy inside the forall; the original is erased by dead-code
// elimination unless it has other users, in which case both carry the tag. Fragments match every op with a tag and
// masks require legality for all of them, so the schedule can still transform the producer when it reaches it.
#include "transforms/Transformation.h"

#include "llvm/ADT/STLExtras.h"
#include "llvm/ADT/StringExtras.h"

#include <set>

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Interfaces/TilingInterface.h"

namespace mlir_rl::transforms {

namespace {

// The linalg op producing `value` when it can be fused into a forall around `consumer`, else null.
mlir::linalg::LinalgOp fusableProducer(mlir::Value value, mlir::Operation *consumer) {
  auto producer = value.getDefiningOp<mlir::linalg::LinalgOp>();
  if (!producer || producer->getBlock() != consumer->getBlock() || !producer.hasPureTensorSemantics()) return {};
  if (!mlir::isa<mlir::TilingInterface>(producer.getOperation())) return {};
  // The slice a consumer tile reads is mapped back to the producer's loops through the result's indexing map.
  auto result = mlir::cast<mlir::OpResult>(value);
  if (!producer.getIndexingMapMatchingResult(result).isProjectedPermutation()) return {};
  for (int64_t r : producer.getStaticLoopRanges())
    if (mlir::ShapedType::isDynamic(r)) return {};
  return producer;
}

}  // namespace

FusionPlan planFusion(mlir::linalg::LinalgOp op) {
  FusionPlan plan;
  if (!op) {
    plan.nothing = "no op under the cursor";
    return plan;
  }
  if (!op.hasPureTensorSemantics()) {
    plan.nothing = "the op does not work on tensors";
    return plan;
  }
  // Producers, transitively: the producers of the op's operands; through producers without reduction loops
  // (elementwise ops, broadcasts: a bias, a residual add, a ReLU before the op) their producers too, so a chain ending
  // in a convolution or matmul fuses whole; of a producer with reduction loops only the fills of its inits (its
  // inputs are the previous layer: recomputing it per tile would multiply its work). Breadth first, so direct
  // producers come first and the plan stops at kMaxFusedProducers.
  std::set<mlir::Operation *> seen{op.getOperation()};
  struct Pending {
    mlir::linalg::LinalgOp consumer;
    std::vector<int64_t> path;
  };
  std::vector<Pending> queue{{op, {}}};
  for (size_t next = 0; next < queue.size(); ++next) {
    Pending at = queue[next];
    bool throughInputs = at.path.empty() || at.consumer.getNumReductionLoops() == 0;
    for (mlir::OpOperand &operand : at.consumer->getOpOperands()) {
      if (static_cast<int>(plan.paths.size()) >= kMaxFusedProducers) break;
      mlir::linalg::LinalgOp producer = fusableProducer(operand.get(), op);
      if (!producer) continue;
      bool isFill = mlir::isa<mlir::linalg::FillOp>(producer.getOperation());
      bool init = at.consumer.isDpsInit(&operand);
      if (!throughInputs && !(init && isFill)) continue;
      // A destination producer must not reduce: its tile is computed once per forall iteration, before its consumer
      // accumulates into it. linalg.fill and broadcasts (bias) qualify.
      if (init && !isFill && producer.getNumReductionLoops() != 0) continue;
      if (!seen.insert(producer.getOperation()).second) continue;
      std::vector<int64_t> path = at.path;
      path.push_back(operand.getOperandNumber());
      plan.paths.push_back(path);
      plan.producers.push_back(producer->getName().getStringRef().str());
      if (!isFill) queue.push_back({producer, path});
    }
  }
  if (plan.empty())
    plan.nothing =
        "no operand of the op is produced by a linalg op in the op's block (a tiled op reads slices: fusion "
        "never crosses its loops)";
  return plan;
}

Fragment tiledFusionFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                             const FusionPlan &plan, llvm::StringRef prefix) {
  SplitSizes split = splitByLoopKind(sizes, isReduction);
  const std::vector<int64_t> &parallelSizes = split.parallel, &reductionSizes = split.reduction;
  bool anyParallel = split.anyParallel;
  // No parallel tile, no forall to fuse into: the same as tiled parallelization (reduction tiling or nothing).
  if (!anyParallel || plan.empty()) return parallelTilingFragment(tag, sizes, isReduction, prefix);

  std::string p = prefix.str();
  const std::string handle = "(!transform.any_op) -> !transform.any_op";
  std::string text = matchTaggedOp(tag, prefix);
  std::vector<std::string> producers;
  auto handleOf = [&](const std::vector<int64_t> &path) {
    std::string name = "%" + p + "_prod";
    for (int64_t k : path) name += "_" + std::to_string(k);
    return name;
  };
  for (const std::vector<int64_t> &path : plan.paths) {
    std::vector<int64_t> parent(path.begin(), path.end() - 1);
    std::string from = parent.empty() ? "%" + p + "_op" : handleOf(parent);
    std::string name = handleOf(path);
    text += "    " + name + " = transform.get_producer_of_operand " + from + "[" + std::to_string(path.back()) +
            "] : " + handle + "\n";
    producers.push_back(name);
  }
  std::string all = producers.front();
  if (producers.size() > 1) {
    all = "%" + p + "_producers";
    text += "    " + all + " = transform.merge_handles deduplicate ";
    for (size_t i = 0; i < producers.size(); ++i) text += (i ? ", " : "") + producers[i];
    text += " : !transform.any_op\n";
  }
  text += "    %" + p + "_func = transform.get_parent_op %" + p + "_op {op_name = \"func.func\"} : " + handle + "\n";
  text += "    %" + p + "_par, %" + p + "_forall = transform.structured.tile_using_forall %" + p + "_op tile_sizes " +
          formatList(parallelSizes) + " : (!transform.any_op) -> (!transform.any_op, !transform.any_op)\n";
  // fuse_into_containing_op picks, one at a time, a producer that has a use inside the forall, so a producer's own
  // producers (and fill) are fused after it, down the chain.
  text += "    %" + p + "_fused, %" + p + "_forall2 = transform.structured.fuse_into_containing_op " + all + " into %" +
          p + "_forall : (!transform.any_op, !transform.any_op) -> (!transform.any_op, !transform.any_op)\n";
  // Originals left without users would keep the producer's tag on a dead full-size op.
  text += "    transform.apply_dce to %" + p + "_func : !transform.any_op\n";
  text += tileUsingForStatement(p + "_par", reductionSizes, prefix, "red");
  return {text};
}

namespace {

class TiledFusion final : public Transformation {
 public:
  llvm::StringRef name() const override { return "TILED_FUSION"; }
  Heads heads() const override { return Heads::Tiles; }
  Refusal refusal(const OpView &view, const TileLegality &tiles) const override {
    if (Refusal r = parallelTilingRefusal(view, tiles, /*checkCopies=*/false)) return r;
    if (view.ops.size() != 1)
      return "the tag marks " + std::to_string(view.ops.size()) +
             " ops (unrolled or fused copies): fusion needs exactly one consumer";
    if (view.fusion->empty()) return view.fusion->nothing;
    return std::nullopt;
  }
  mlir::FailureOr<std::optional<Fragment>> plan(const OpView &view, const ActionArgs &args,
                                                llvm::StringRef prefix) const override {
    if (llvm::all_of(args.tileSizes, [](int64_t s) { return s == 0; })) return std::optional<Fragment>();
    std::vector<bool> isReduction = view.isReduction();
    llvm::SmallVector<bool> kinds(isReduction.begin(), isReduction.end());
    return std::optional<Fragment>(tiledFusionFragment(view.tag, args.tileSizes, kinds, *view.fusion, prefix));
  }
  std::string describeArgs(const OpView &view, const ActionArgs &args) const override {
    std::vector<bool> isReduction = view.isReduction();
    bool anyParallel = false;
    for (size_t i = 0; i < args.tileSizes.size() && i < isReduction.size(); ++i)
      anyParallel |= args.tileSizes[i] != 0 && !isReduction[i];
    std::string fused;
    if (!anyParallel)
      fused = " (no parallel tile: nothing fused)";
    else if (!view.fusion->empty())
      fused = " fusing " + llvm::join(view.fusion->producers, ", ");
    return describeSizes(view, args) + fused;
  }
};

}  // namespace

const Transformation &makeTiledFusion() {
  static const TiledFusion t;
  return t;
}

}  // namespace mlir_rl::transforms
