// Transformations on one tagged linalg op, expressed as Transform-dialect fragments.
//
// Every transformation in this folder has two halves:
//   * a legality check on the op as it is now (feeds the action masks), and
//   * a fragment of Transform-dialect IR that performs it.
// Fragments are applied to a clone of the payload by `applyFragments` and concatenated by `buildScript` into the
// exportable schedule that `mlir-opt --transform-interpreter` replays on the original benchmark.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/SmallVector.h"
#include "llvm/ADT/StringRef.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

namespace mlir {
class Operation;
namespace linalg {
class LinalgOp;
}
}  // namespace mlir

namespace mlir_rl::transforms {

// Why a transformation is refused for an op, in words for users; std::nullopt when it is allowed.
using Refusal = std::optional<std::string>;

// Name of the discardable attribute that tags each schedulable linalg op with a stable integer.
inline constexpr const char kOpTagAttr[] = "rl.op";

// A Transform-dialect fragment: statements that use the handle `%root` (the payload module) and define values
// whose names all start with `%<prefix>_`, so fragments of one schedule never clash.
struct Fragment {
  std::string text;
};

// The same fragment with its values named `%<to>_...` instead of `%<from>_...` (what building it with prefix `to`
// gives, without reading the payload again).
Fragment renamePrefix(const Fragment &fragment, llvm::StringRef from, llvm::StringRef to);

// Statement matching the op tagged `tag` into `%<prefix>_op`.
std::string matchTaggedOp(int64_t tag, llvm::StringRef prefix);

// Statements re-attaching tag `tag` to the op held by `%<handle>` (for transformations that rebuild the op, such
// as generalization, and drop its discardable attributes).
std::string retag(llvm::StringRef handle, int64_t tag, llvm::StringRef prefix);

// Statement tiling the op held by `%<handle>` with scf.for loops (one per non-zero size), defining
// `%<prefix>_<result>` (the tiled op) and `%<prefix>_loops`. Empty when every size is 0.
std::string tileUsingForStatement(llvm::StringRef handle, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix,
                                  llvm::StringRef result);

// Statements tiling the op held by `%<handle>` as tileUsingForStatement does (`%<prefix>_<result>`), then vectorizing
// the tiled op (the op itself when every size is 0): for the helper ops a rewrite leaves outside the schedule.
std::string tileAndVectorizeStatements(llvm::StringRef handle, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix,
                                       llvm::StringRef result);

// The largest power of two up to `cap` (itself a power of two) that divides `n`; 1 when none larger does.
int64_t largestPowerOfTwoDividing(int64_t n, int64_t cap);

// Wraps fragments into a module holding `@__transform_main`, the entry point `--transform-interpreter` runs.
std::string buildScript(llvm::ArrayRef<Fragment> fragments);

// Applies the fragments to `payload` in place. On failure the interpreter's (and the verifier's) diagnostics were
// emitted: capture them with support::DiagnosticCapture. The payload may then be partially transformed, so callers
// apply to a clone.
mlir::LogicalResult applyFragments(mlir::ModuleOp payload, llvm::ArrayRef<Fragment> fragments);
// The same for a whole script as buildScript (and ExportSchedule) writes it: what `mlir-opt --transform-interpreter`
// does with it.
mlir::LogicalResult applyScript(mlir::ModuleOp payload, const std::string &script);

// Finds the linalg op carrying tag `tag` (null when there is none, e.g. after vectorization consumed it).
mlir::linalg::LinalgOp findTaggedOp(mlir::ModuleOp module, int64_t tag);

// Every linalg op carrying tag `tag`, in walk order. One tag can mark several ops: unrolling copies the op, and
// fusing a producer into a consumer's loop leaves a tiled copy inside the loop (plus the original when it has other
// users). Fragments match by tag, so they transform all of them; legality must hold for all of them.
std::vector<mlir::linalg::LinalgOp> findTaggedOps(mlir::ModuleOp module, int64_t tag);

// Formats a list of integers as `[a, b, c]`.
std::string formatList(llvm::ArrayRef<int64_t> values);

// The static loop ranges of linalg ops, each computed once: LinalgOp::getStaticLoopRanges concatenates, inverts and
// composes the op's indexing maps on every call, and masks and observations ask for the same op's ranges several
// times. Valid only while the ops are neither changed nor erased (e.g. for one immutable state); keyed by address.
class LoopRanges {
 public:
  llvm::ArrayRef<int64_t> of(mlir::linalg::LinalgOp op);

 private:
  std::unordered_map<mlir::Operation *, llvm::SmallVector<int64_t, 8>> ranges_;  // node-based: references stay valid
};

// ---- Tiling.cpp: loops of the op tiled with scf.for -----------------------------------------------------------
// A tile size is legal for a loop when it is 0 (do not tile) or a divisor of the loop's static bound.
bool isLegalTileSize(int64_t bound, int64_t size);
// MLIR 19's one-shot bufferization derives the buffer type of each loop-carried tensor from the enclosing loop's and
// the nested loop's, revisiting each level twice: its time doubles with every scf.for / scf.forall level around an op
// (measured on a tiled convolution: 15 levels ~70 ms, 18 levels ~350 ms; 21 levels ~4 s, 25 levels over a minute).
// Loop-creating transformations keep the levels around an op at or below this.
inline constexpr int kMaxLoopDepth = 16;
// The levels around `op` that bufferization sees: scf.forall ops and scf.for loops except those with a constant trip
// count of 1 (canonicalization folds those before bufferization).
int loopDepth(mlir::Operation *op);
Fragment tilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix);

// ---- ParallelTiling.cpp: parallel loops tiled with scf.forall, reduction loops with scf.for -------------------
// Reduction loops never go to scf.forall (that would race). Returns the fragment; `sizes` are per loop.
Fragment parallelTilingFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                                llvm::StringRef prefix);
// Tile sizes split by loop kind: parallel loops keep theirs in `parallel` (0 for reductions) and reductions in
// `reduction` (0 for parallel loops).
struct SplitSizes {
  std::vector<int64_t> parallel, reduction;
  bool anyParallel = false;
};
SplitSizes splitByLoopKind(llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction);
// True when the op already sits inside an scf.forall (nested parallelism is refused).
bool isInsideForall(mlir::Operation *op);

// ---- Interchange.cpp: permutation of the op's loops (generalizes named ops first) -----------------------------
Fragment interchangeFragment(int64_t tag, llvm::ArrayRef<int64_t> permutation, llvm::StringRef prefix);
// Enumerated-swaps mode (MLIR RL's alternative to level pointers): swap number `index` exchanges loops i and i + d,
// d in {1, 2, 3}; distance-1 swaps come first ((0,1), (1,2), ...), then distance 2, then 3. With `maxLoops` = L
// there are (L-1) + (L-2) + (L-3) = 3L-6 swaps (fewer for L < 3).
int64_t numSwaps(int64_t maxLoops);
// The loops swap `index` exchanges (first < second); std::nullopt when the index is out of range.
std::optional<std::pair<int64_t, int64_t>> swapLoops(int64_t index, int64_t maxLoops);
// The permutation of `numLoops` loops that swap `index` performs; std::nullopt when it names a loop >= numLoops.
std::optional<std::vector<int64_t>> swapPermutation(int64_t index, int64_t maxLoops, int64_t numLoops);

// ---- Vectorization.cpp: the op becomes vector operations ------------------------------------------------------
// Why the op cannot be vectorized with register-sized vectors (std::nullopt: it can).
// Convolutions and pooling (the 2-D NHWC/NCHW/depthwise forms MLIR can decompose) take another path: their
// output-height and kernel-height loops are tiled to 1, the op is decomposed to its 1-D form, and that is vectorized;
// the size limits then apply to the 1-D iteration space.
Refusal vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements);
Refusal vectorizationBlocker(mlir::linalg::LinalgOp op, int64_t maxVectorElements, LoopRanges &ranges);
// The fragment for non-convolution ops (structured.vectorize; the cleanup patterns run in the runner's lowering).
Fragment vectorizationFragment(int64_t tag, llvm::StringRef prefix);
// The fragment for the ops carrying `tag` as they are now: the convolution path (tile output height and kernel
// height to 1 where they are not 1 yet, decompose, vectorize) when `ops` are decomposable convolutions, else
// vectorizationFragment.
Fragment vectorizationFragmentFor(llvm::ArrayRef<mlir::linalg::LinalgOp> ops, int64_t tag, llvm::StringRef prefix);
// Positions of the output-height and kernel-height loops of a convolution / pooling op that
// `transform.structured.decompose` turns into its 1-D form; std::nullopt for any other op.
std::optional<std::pair<int, int>> decomposableConvLoops(mlir::linalg::LinalgOp op);

// ---- TiledFusion.cpp: tiled parallelization plus fusion of the op's producers into the scf.forall -------------
// What TILED_FUSION fuses into the op's scf.forall: the producers of the op's operands (linalg ops defined in the
// op's block: any producer of an input; a linalg.fill or all-parallel op initializing the destination) and the
// linalg.fill initializing each fused producer's own destination.
struct FusionPlan {
  // The fused ops, each as the path of operand numbers that reaches it from the op: {0} is the producer of the op's
  // operand 0, {0, 1} the producer of that producer's operand 1 (e.g. the fill of a conv feeding the op's input).
  // A path's prefixes come before it.
  std::vector<std::vector<int64_t>> paths;
  std::vector<std::string> producers;  // names of the fused ops, in path order (descriptions)
  Refusal nothing;                     // why nothing can be fused (set when paths is empty)
  bool empty() const { return paths.empty(); }
};
// At most this many ops are fused into one forall (a chain of elementwise ops ending in a contraction and its fill).
inline constexpr int kMaxFusedProducers = 8;
FusionPlan planFusion(mlir::linalg::LinalgOp op);
// Parallel loops with a non-zero size -> scf.forall, the planned producers fused into it, then reduction loops with a
// non-zero size -> scf.for inside the forall (after fusion, so fused producers stay outside every reduction loop).
// Without a non-zero parallel size there is no forall to fuse into: the fragment is parallelTilingFragment's.
Fragment tiledFusionFragment(int64_t tag, llvm::ArrayRef<int64_t> sizes, llvm::ArrayRef<bool> isReduction,
                             const FusionPlan &plan, llvm::StringRef prefix);

// ---- Img2Col.cpp: a 2-D convolution becomes an img2col packing op plus a contraction --------------------------
// Why transform.structured.convert_conv2d_to_img2col does not support the op; std::nullopt when it does (static 2-D
// NHWC-HWCF, NHWC-FHWC, NCHW-FCHW or depthwise NHWC-HWC convolution with unit dilations).
Refusal img2colBlocker(mlir::linalg::LinalgOp op);
// The contraction that replaces the convolution gets the convolution's tag.
Fragment img2colFragment(int64_t tag, bool depthwise, llvm::StringRef prefix);

// ---- Unroll.cpp: unrolling of the innermost scf.for around the op --------------------------------------------
// Unrolled copies keep the tag; a factor is legal when every loop's trip count is a multiple of it, the tag then
// marks at most kMaxUnrolledCopies ops, and their iteration spaces add up to at most kMaxUnrolledElements elements:
// straight-line code that size is what LLVM compiles (it fully unrolls small scalar loop nests; vectorized copies
// are vector ops of that many elements). Measured on a matmul tile 8x16x1 (128 elements) unrolled 16 / 32 / 64
// times: compile 0.2 / 0.43 / 0.97 s scalar, 0.11 / 0.16 / 0.3 s vectorized.
inline constexpr int64_t kMaxUnrolledCopies = 64;
inline constexpr int64_t kMaxUnrolledElements = 2048;
// Constant trip counts of the distinct innermost scf.for loops around `ops`; empty when some op has no scf.for
// around it or its trip count is not constant.
std::vector<int64_t> innermostLoopTripCounts(llvm::ArrayRef<mlir::linalg::LinalgOp> ops);
// The iteration-space elements of `ops` together (saturating; dynamic bounds count as the saturated value); for
// convolutions that vectorize through their 1-D form, without the output-height and kernel-height loops.
int64_t totalIterationElements(llvm::ArrayRef<mlir::linalg::LinalgOp> ops);
int64_t totalIterationElements(llvm::ArrayRef<mlir::linalg::LinalgOp> ops, LoopRanges &ranges);
bool isLegalUnrollFactor(llvm::ArrayRef<int64_t> tripCounts, int64_t copies, int64_t elements, int64_t factor);
// MLIR 19's one-shot bufferization derives the buffer type of an scf.for iter_arg from its init and its yielded value,
// recursively and without memoization, so sibling scf.for loops chained through the iter_args of an enclosing scf.for
// cost time exponential in their number (measured: 8 sibling 5-deep nests 18 s, 32 sibling loops over a minute).
// Unrolling makes such siblings when the unrolled body holds loops, or when the copies get loops of their own.
// The largest number of `ops` that share one scf.for body (0 when none is directly in an scf.for).
int maxCopiesPerLoopBody(llvm::ArrayRef<mlir::linalg::LinalgOp> ops);
// Why loop-creating transformations are refused for copies sharing a loop body.
std::string unrolledCopiesReason(int copies);
// Vectorizing a convolution tiles its output-height and kernel-height loops (two levels at most); with up to this
// many copies in one body that stays cheap (measured: 2 copies x 2 levels in 14 enclosing levels, 0.2 s).
inline constexpr int kMaxCopiesForConvVectorization = 2;
// Why UNROLL is refused because the innermost scf.for around one of `ops` holds other scf.for loops (std::nullopt:
// none does).
Refusal unrollLoopNestBlocker(llvm::ArrayRef<mlir::linalg::LinalgOp> ops);
Fragment unrollFragment(int64_t tag, int64_t factor, llvm::StringRef prefix);

}  // namespace mlir_rl::transforms
