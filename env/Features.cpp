#include "env/Features.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>

#include "llvm/ADT/StringSwitch.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Dialect/Tensor/IR/Tensor.h"
#include "mlir/IR/AffineExpr.h"
#include "mlir/Interfaces/LoopLikeInterface.h"

#include "transforms/Transform.h"

namespace mlir_rl::env {

namespace {

int32_t clampToInt32(int64_t v) {
  return static_cast<int32_t>(
      std::clamp<int64_t>(v, std::numeric_limits<int32_t>::min(), std::numeric_limits<int32_t>::max()));
}

bool isFloatLike(mlir::Type t) {
  t = mlir::getElementTypeOrSelf(t);
  return mlir::isa<mlir::FloatType, mlir::ComplexType>(t);
}

// One access: the rows of `map` (one per tensor dim, at most L) into `matrix` at access slot `slot`.
void fillAccess(mlir::AffineMap map, const OpFeatures &f, int slot, std::vector<int32_t> &matrix) {
  int L = f.maxLoops;
  llvm::SmallVector<int64_t, 16> coefficients(L);
  for (int r = 0; r < std::min<int>(L, map.getNumResults()); ++r) {
    std::fill(coefficients.begin(), coefficients.end(), 0);
    int64_t constant = 0;
    if (!linearCoefficients(map.getResult(r), coefficients, constant)) continue;  // not linear: a zero row
    for (int d = 0; d < L; ++d) matrix[f.accessIndex(slot, r, d)] = clampToInt32(coefficients[d]);
    matrix[f.accessIndex(slot, r, L)] = clampToInt32(constant);
  }
}

bool isScheduled(mlir::linalg::LinalgOp op) {
  return op && !mlir::isa<mlir::linalg::FillOp>(op.getOperation()) && op->hasAttr(transforms::kOpTagAttr);
}

// Follows `v` back through the IR the transformations insert between a consumer and its producer.
mlir::Value traceToSource(mlir::Value v) {
  for (int guard = 0; guard < 256 && v; ++guard) {
    if (auto slice = v.getDefiningOp<mlir::tensor::ExtractSliceOp>()) {
      v = slice.getSource();
      continue;
    }
    if (auto arg = mlir::dyn_cast<mlir::BlockArgument>(v)) {
      auto loop = mlir::dyn_cast_or_null<mlir::LoopLikeOpInterface>(arg.getOwner()->getParentOp());
      if (!loop) break;
      mlir::OpOperand *init = loop.getTiedLoopInit(arg);
      if (!init) break;
      v = init->get();
      continue;
    }
    auto result = mlir::dyn_cast<mlir::OpResult>(v);
    if (!result) break;
    if (auto forall = mlir::dyn_cast<mlir::scf::ForallOp>(result.getOwner())) {
      // A tiled producer: the slices written into the shared output come from the op inside the loop.
      mlir::BlockArgument out = forall.getTiedBlockArgument(forall.getTiedOpOperand(result));
      mlir::Value source;
      for (mlir::Operation *combining : forall.getCombiningOps(out))
        if (auto insert = mlir::dyn_cast<mlir::tensor::ParallelInsertSliceOp>(combining)) {
          source = insert.getSource();
          break;
        }
      if (!source) break;
      v = source;
      continue;
    }
    if (auto loop = mlir::dyn_cast<mlir::LoopLikeOpInterface>(result.getOwner())) {
      // A tiled producer in scf.for: the loop yields the op's tile inserted into the iter_arg.
      mlir::BlockArgument iterArg = loop.getTiedLoopRegionIterArg(result);
      mlir::OpOperand *yielded = iterArg ? loop.getTiedLoopYieldedValue(iterArg) : nullptr;
      if (!yielded) break;
      v = yielded->get();
      if (auto insert = v.getDefiningOp<mlir::tensor::InsertSliceOp>()) v = insert.getSource();
      continue;
    }
    break;
  }
  return v;
}

}  // namespace

OpFeatures::OpFeatures(int L, int A)
    : maxLoops(L),
      maxAccesses(A),
      opType(kNumOpFamilies, 0.f),
      bounds(L, 0),
      boundsLog2(L, 0.f),
      iterators(L, 0),
      loads(static_cast<size_t>(A) * L * (L + 1), 0),
      stores(static_cast<size_t>(A) * L * (L + 1), 0),
      accessRanks(2 * static_cast<size_t>(A), -1),
      opCounts(2 * kNumArithKinds, 0),
      vectorizable(1, 0) {}

CompactFeatures::CompactFeatures(const OpFeatures &features) : rest_(features) {
  clearMatrices();
  for (size_t i = 0; i < features.loads.size(); ++i)
    if (features.loads[i] != 0) loads_.emplace_back(static_cast<int32_t>(i), features.loads[i]);
  for (size_t i = 0; i < features.stores.size(); ++i)
    if (features.stores[i] != 0) stores_.emplace_back(static_cast<int32_t>(i), features.stores[i]);
}

OpFeatures CompactFeatures::expand() const {
  OpFeatures out = rest_;
  size_t n = static_cast<size_t>(rest_.maxAccesses) * rest_.maxLoops * (rest_.maxLoops + 1);
  out.loads.assign(n, 0);
  out.stores.assign(n, 0);
  for (auto [i, v] : loads_) out.loads[i] = v;
  for (auto [i, v] : stores_) out.stores[i] = v;
  return out;
}

bool linearCoefficients(mlir::AffineExpr expr, llvm::MutableArrayRef<int64_t> coefficients, int64_t &constant) {
  // Accumulates scale * expr.
  std::function<bool(mlir::AffineExpr, int64_t)> add = [&](mlir::AffineExpr e, int64_t scale) -> bool {
    switch (e.getKind()) {
      case mlir::AffineExprKind::DimId: {
        unsigned d = mlir::cast<mlir::AffineDimExpr>(e).getPosition();
        if (d < coefficients.size()) coefficients[d] += scale;
        return true;
      }
      case mlir::AffineExprKind::Constant:
        constant += scale * mlir::cast<mlir::AffineConstantExpr>(e).getValue();
        return true;
      case mlir::AffineExprKind::Add: {
        auto bin = mlir::cast<mlir::AffineBinaryOpExpr>(e);
        return add(bin.getLHS(), scale) && add(bin.getRHS(), scale);
      }
      case mlir::AffineExprKind::Mul: {
        auto bin = mlir::cast<mlir::AffineBinaryOpExpr>(e);
        if (auto c = mlir::dyn_cast<mlir::AffineConstantExpr>(bin.getRHS()))
          return add(bin.getLHS(), scale * c.getValue());
        if (auto c = mlir::dyn_cast<mlir::AffineConstantExpr>(bin.getLHS()))
          return add(bin.getRHS(), scale * c.getValue());
        return false;
      }
      default:  // Mod, FloorDiv, CeilDiv, SymbolId
        return false;
    }
  };
  return add(expr, 1);
}

bool classifyArith(llvm::StringRef name, ArithKind &kind) {
  if (!name.consume_front("arith.") && !name.consume_front("math.")) return false;
  if (name == "constant") return false;
  kind = llvm::StringSwitch<ArithKind>(name)
             .Cases("addf", "addi", "addui_extended", ArithKind::Add)
             .Cases("subf", "subi", ArithKind::Sub)
             .Cases("mulf", "muli", "mulsi_extended", "mului_extended", ArithKind::Mul)
             .Cases("divf", "divsi", "divui", "ceildivsi", "ceildivui", "floordivsi", ArithKind::Div)
             .Cases("remf", "remsi", "remui", ArithKind::Div)
             .Cases("exp", "exp2", "expm1", ArithKind::Exp)
             .Cases("maximumf", "maxnumf", "maxsi", "maxui", ArithKind::Max)
             .Cases("minimumf", "minnumf", "minsi", "minui", ArithKind::Max)
             .Default(ArithKind::Other);
  return true;
}

void extractOpFeatures(mlir::linalg::LinalgOp op, OpFeatures &f) {
  transforms::LoopRanges ranges;
  extractOpFeatures(op, f, ranges);
}

void extractOpFeatures(mlir::linalg::LinalgOp op, OpFeatures &f, transforms::LoopRanges &loopRanges) {
  int L = f.maxLoops, A = f.maxAccesses;
  llvm::ArrayRef<int64_t> ranges = loopRanges.of(op);
  llvm::SmallVector<mlir::utils::IteratorType> its = op.getIteratorTypesArray();
  for (int i = 0; i < std::min<int>(L, ranges.size()); ++i) {
    f.bounds[i] = mlir::ShapedType::isDynamic(ranges[i]) ? 0 : ranges[i];
    f.boundsLog2[i] = static_cast<float>(std::log2(1.0 + static_cast<double>(f.bounds[i])));
    f.iterators[i] = its[i] == mlir::utils::IteratorType::parallel ? 1 : 2;
  }

  int slot = 0;
  for (mlir::OpOperand *input : op.getDpsInputOperands()) {
    if (slot >= A) break;
    mlir::AffineMap map = op.getMatchingIndexingMap(input);
    f.accessRanks[slot] = static_cast<int32_t>(map.getNumResults());
    fillAccess(map, f, slot++, f.loads);
  }
  slot = 0;
  for (mlir::OpOperand &init : op.getDpsInitsMutable()) {
    if (slot >= A) break;
    mlir::AffineMap map = op.getMatchingIndexingMap(&init);
    f.accessRanks[A + slot] = static_cast<int32_t>(map.getNumResults());
    fillAccess(map, f, slot++, f.stores);
  }

  if (op->getNumRegions() == 1) {
    op->getRegion(0).walk([&](mlir::Operation *inner) {
      ArithKind kind;
      llvm::StringRef name = inner->getName().getStringRef();
      if (name == "math.fma") {  // a fused multiply-add is one multiplication and one addition
        int row = isFloatLike(inner->getResult(0).getType()) ? 0 : 1;
        ++f.opCounts[row * kNumArithKinds + static_cast<int>(ArithKind::Mul)];
        ++f.opCounts[row * kNumArithKinds + static_cast<int>(ArithKind::Add)];
        return;
      }
      if (!classifyArith(name, kind)) return;
      // Floating-point when it reads a float (compares, float-to-int casts) or produces one (int-to-float casts).
      bool isFloat =
          llvm::any_of(inner->getOperandTypes(), isFloatLike) || llvm::any_of(inner->getResultTypes(), isFloatLike);
      ++f.opCounts[(isFloat ? 0 : 1) * kNumArithKinds + static_cast<int>(kind)];
    });
  }
}

mlir::linalg::LinalgOp findProducer(mlir::linalg::LinalgOp op) {
  if (!op) return {};
  auto look = [&](mlir::OpOperand &operand) -> mlir::linalg::LinalgOp {
    mlir::Value source = traceToSource(operand.get());
    auto producer = source ? source.getDefiningOp<mlir::linalg::LinalgOp>() : mlir::linalg::LinalgOp();
    return isScheduled(producer) && producer != op ? producer : mlir::linalg::LinalgOp();
  };
  for (mlir::OpOperand *input : op.getDpsInputOperands())
    if (auto p = look(*input)) return p;
  for (mlir::OpOperand &init : op.getDpsInitsMutable())
    if (auto p = look(init)) return p;
  return {};
}

}  // namespace mlir_rl::env
