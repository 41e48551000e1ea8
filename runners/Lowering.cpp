#include "runners/Lowering.h"

#include "support/Status.h"

#include "mlir/Dialect/Arith/IR/Arith.h"
#include "mlir/Dialect/Bufferization/IR/Bufferization.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/Dialect/LLVMIR/LLVMDialect.h"
#include "mlir/Dialect/Linalg/Transforms/Hoisting.h"
#include "mlir/Dialect/Math/Transforms/Passes.h"
#include "mlir/Dialect/Transform/IR/TransformOps.h"
#include "mlir/Dialect/Transform/Transforms/TransformInterpreterUtils.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "mlir/Transforms/GreedyPatternRewriteDriver.h"

#include "support/Diagnostics.h"

namespace mlir_rl::runners {

namespace {

// Vector lowering to what convert-vector-to-llvm accepts: contractions become outer products and then FMAs,
// transfers become 1-D (register-width after unrolling), transposes/broadcasts/shape casts are expanded.
// Canonicalization runs as a separate step: in one greedy set with lower_broadcast it loops forever on a broadcast
// that only adds leading unit dimensions (vector<2x1xf32> to vector<1x1x2x1xf32>: lowered to vector.insert chains,
// which canonicalization folds back into the same broadcast). convert-vector-to-llvm lowers the broadcasts that
// canonicalization leaves.
constexpr const char kVectorLowering[] = R"mlir(
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %f = transform.structured.match ops{["func.func"]} in %root : (!transform.any_op) -> !transform.any_op
    transform.apply_patterns to %f {
      transform.apply_patterns.vector.lower_contraction lowering_strategy = "outerproduct"
      transform.apply_patterns.vector.lower_multi_reduction lowering_strategy = "innerparallel"
      transform.apply_patterns.vector.lower_transpose
      transform.apply_patterns.vector.lower_broadcast
      transform.apply_patterns.vector.lower_shape_cast
      transform.apply_patterns.vector.lower_masks
      transform.apply_patterns.vector.lower_transfer max_transfer_rank = 1
      transform.apply_patterns.vector.lower_outerproduct
    } : !transform.any_op
    transform.apply_patterns to %f {
      transform.apply_patterns.canonicalization
    } : !transform.any_op
    transform.yield
  }
}
)mlir";

// What vectorization leaves on tensors, tidied once per candidate before bufferization: broadcast-multiply-reduce
// becomes vector.contract, transposed transfers are folded, leading unit dimensions are dropped, and everything is
// canonicalized (e.g. a transfer_write forwarded to the transfer_read of the same tensor). Applying these in the
// VECTORIZATION step instead cost ≈0.8 ms per step, mostly building the pattern sets and the greedy driver's sweeps.
// Leading unit dimensions go first, on their own: a generic contraction with a unit batch dimension (img2col's,
// 1x8x32x1 per register tile) otherwise became a vector.contract whose operands were already broadcast to the full
// 8x32x1 (the broadcasts hidden behind a vector.extract of the unit dimension), which the outer-product lowering
// cannot use: it was lowered lane by lane, a multiply per element and a scalar add, and VGG-16 conv3_1's contraction
// ran at half the machine's peak. Without the unit dimension the unit reduction folds into a vector multiply and add.
constexpr const char kVectorCleanup[] = R"mlir(
module attributes {transform.with_named_sequence} {
  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {
    %f = transform.structured.match ops{["func.func"]} in %root : (!transform.any_op) -> !transform.any_op
    transform.apply_patterns to %f {
      transform.apply_patterns.vector.cast_away_vector_leading_one_dim
      transform.apply_patterns.canonicalization
    } : !transform.any_op
    transform.apply_patterns to %f {
      transform.apply_patterns.vector.reduction_to_contract
      transform.apply_patterns.vector.transfer_permutation_patterns
      transform.apply_patterns.vector.cast_away_vector_leading_one_dim
      transform.apply_patterns.canonicalization
    } : !transform.any_op
    transform.yield
  }
}
)mlir";

constexpr const char kBufferize[] =
    "canonicalize,cse,"
    "one-shot-bufferize{bufferize-function-boundaries function-boundary-type-conversion=identity-layout-map},"
    "canonicalize,cse,func.func(buffer-hoisting),buffer-deallocation-pipeline,convert-bufferization-to-memref,"
    "canonicalize,"
    "loop-invariant-code-motion,cse";

// Allocations through aligned_alloc, not malloc plus pointer arithmetic: LLVM treats aligned_alloc's result as a
// fresh object (noalias), while the pointer malloc's lowering rounds up through ptrtoint/inttoptr hides where it
// came from, so LLVM had to assume that a kernel's intermediate buffers alias each other and the output: a contraction
// reading a buffer written earlier in the same kernel (img2col's packing, PACK's transposition) reloaded and stored
// its accumulators at every step (8.7 ms against 4.2 ms for a packed 128x768x3072 matmul).
// Math before vectors: convert-math-to-libm scalarizes math ops that have no LLVM intrinsic (erf, tanh, atan, ...)
// on vectors into vector.extract / libm call / vector.insert, and those vector ops must still meet
// convert-vector-to-llvm (after it they survived as vector ops or unrealized casts, e.g. a vectorized GELU's erf).
std::string toLLVMPipeline(int numThreads) {
  return "func.func(convert-linalg-to-loops),scf-forall-to-parallel,"
         "convert-scf-to-openmp{num-threads=" +
         std::to_string(numThreads) +
         "},canonicalize,"
         "func.func(convert-vector-to-scf{full-unroll=true}),lower-affine,convert-scf-to-cf,canonicalize,"
         "expand-strided-metadata,lower-affine,finalize-memref-to-llvm{use-aligned-alloc=1},convert-math-to-llvm,"
         "convert-math-to-libm,"
         "convert-vector-to-llvm,convert-arith-to-llvm,convert-index-to-llvm,"
         "convert-func-to-llvm,convert-cf-to-llvm,convert-openmp-to-llvm,reconcile-unrealized-casts";
}

absl::Status runPipeline(mlir::ModuleOp module, const std::string &pipeline, const char *stage,
                         const LoweringOptions &options, support::DiagnosticCapture &capture) {
  mlir::PassManager pm(module.getContext());
  if (options.printTiming) pm.enableTiming();
  std::string parseErrors;
  llvm::raw_string_ostream errs(parseErrors);
  if (mlir::failed(mlir::parsePassPipeline(pipeline, pm, errs)))
    return absl::InternalError(std::string("bad ") + stage + " pipeline: " + errs.str());
  if (mlir::failed(pm.run(module)))
    return absl::InvalidArgumentError(std::string(stage) + " failed: " + capture.take());
  return absl::OkStatus();
}

absl::Status applyScript(mlir::ModuleOp module, const char *text, const char *stage,
                         support::DiagnosticCapture &capture) {
  mlir::OwningOpRef<mlir::ModuleOp> script = mlir::parseSourceString<mlir::ModuleOp>(text, module.getContext());
  if (!script) return absl::InternalError(std::string(stage) + " script: " + capture.take());
  auto entry = script->lookupSymbol<mlir::transform::NamedSequenceOp>("__transform_main");
  if (mlir::failed(
          mlir::transform::applyTransformNamedSequence(module, entry, *script, mlir::transform::TransformOptions())))
    return absl::InvalidArgumentError(std::string(stage) + " failed: " + capture.take());
  return absl::OkStatus();
}

}  // namespace

absl::Status prepareKernel(mlir::ModuleOp module, llvm::StringRef kernel) {
  auto func = module.lookupSymbol<mlir::func::FuncOp>(kernel);
  if (!func) return absl::InvalidArgumentError("kernel function @" + kernel.str() + " not found");
  mlir::MLIRContext *ctx = module.getContext();
  func->setAttr(mlir::LLVM::LLVMDialect::getEmitCWrapperAttrName(), mlir::UnitAttr::get(ctx));
  // Inputs are shared between repeated runs, so the kernel must never write into them.
  for (unsigned i = 0; i < func.getNumArguments(); ++i)
    func.setArgAttr(i, mlir::bufferization::BufferizationDialect::kWritableAttrName, mlir::BoolAttr::get(ctx, false));
  return absl::OkStatus();
}

absl::Status lowerToLLVM(mlir::ModuleOp module, const LoweringOptions &options) {
  support::DiagnosticCapture capture;
  MLIR_RL_RETURN_IF_ERROR(applyScript(module, kVectorCleanup, "vector cleanup", capture));
  MLIR_RL_RETURN_IF_ERROR(runPipeline(module, kBufferize, "bufferization", options, capture));
  // Keep accumulators in registers across the reduction loop (e.g. the C tile of a matmul).
  module.walk([](mlir::func::FuncOp func) { mlir::linalg::hoistRedundantVectorTransfers(func); });
  MLIR_RL_RETURN_IF_ERROR(applyScript(module, kVectorLowering, "vector lowering", capture));
  // f32 exp, log, tanh, erf, sin, cos, atan, ... as polynomials in arith ops (what IREE does on CPUs): on vectors
  // they stay vectors, where LLVM would call libm once per lane (a vectorized GELU's erf was slower than scalar code).
  // The reference and every candidate are lowered alike, so outputs are compared like for like.
  {
    mlir::RewritePatternSet patterns(module.getContext());
    mlir::populateMathPolynomialApproximationPatterns(patterns);
    if (mlir::failed(mlir::applyPatternsAndFoldGreedily(module, std::move(patterns))))
      return absl::InternalError("math approximation did not converge: " + capture.take());
  }
  // A vector multiply feeding a vector add may become one FMA (LLVM's `contract`, what GCC does by default and clang
  // within an expression). Vectorized generic contractions whose reduction dimension is tiled to 1 reach LLVM as a
  // vector mulf and addf (canonicalization elides the unit multi_reduction before reduction_to_contract can make it a
  // vector.contract): each FMA cost two instructions, and img2col's contraction of VGG-16 conv3_1 ran at 96 GFLOP/s
  // (180 with the flag and the cleanup above). Scalar code keeps separate operations: an untransformed reduction is a
  // chain of dependent adds, and as FMAs (4 cycles against 3 for an add on Golden Cove) the VGG-16 reference took 641
  // ms, not 446, which would have inflated every speedup. Rounding differs by at most an ulp per step.
  module.walk([](mlir::arith::ArithFastMathInterface op) {
    if (op->getNumResults() != 1 || !mlir::isa<mlir::VectorType>(op->getResult(0).getType())) return;
    mlir::arith::FastMathFlagsAttr current = op.getFastMathFlagsAttr();
    mlir::arith::FastMathFlags flags = current ? current.getValue() : mlir::arith::FastMathFlags::none;
    op->setAttr(op.getFastMathAttrName(),
                mlir::arith::FastMathFlagsAttr::get(op->getContext(), flags | mlir::arith::FastMathFlags::contract));
  });
  MLIR_RL_RETURN_IF_ERROR(
      runPipeline(module, toLLVMPipeline(options.numThreads), "lowering to LLVM", options, capture));
  if (!options.noaliasKernel.empty()) {
    if (auto func = module.lookupSymbol<mlir::LLVM::LLVMFuncOp>(options.noaliasKernel)) {
      mlir::UnitAttr unit = mlir::UnitAttr::get(module.getContext());
      for (unsigned i = 0; i < func.getNumArguments(); ++i)
        if (mlir::isa<mlir::LLVM::LLVMPointerType>(func.getArgument(i).getType()))
          func.setArgAttr(i, mlir::LLVM::LLVMDialect::getNoAliasAttrName(), unit);
    }
  }
  return absl::OkStatus();
}

}  // namespace mlir_rl::runners
