// A transformation is one object: its name and action-type value, the action heads it reads, when it is refused (the
// action mask, with reasons), the Transform-dialect fragment it applies and how it describes itself. The registry
// lists them in action-type order (clients index types by position: new ones go last).
//
// Adding a transformation: one file in this folder defining a class derived from Transformation and a
// `const Transformation &make<Name>()` accessor, one line in the registry (Registry.cpp), and its tests
// (legality, export replay by mlir-opt, correctness; see tests/unit/transformations_test.cpp). The environment
// (env/Masks.cpp, env/Session.cpp) needs no change: masks, steps, descriptions and the spaces loop over the registry.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "mlir/Support/LogicalResult.h"

#include "transforms/Transform.h"

namespace mlir_rl::transforms {

// The action heads a transformation reads besides 'type'. Only these are checked against the mask.
enum class Heads {
  None,
  Tiles,         // tile_0 .. tile_{L-1}: one size per loop
  UnrollFactor,  // tile_{L-1}: the unroll factor
  Interchange,   // interchange: a level pointer, or a swap
  PeeledTiles,   // tile_0 .. tile_{L-1}: one size per loop, which need not divide it (mask_tiles_peeled)
};

// What transformations see of the op under the cursor, in one state (which nothing changes while the view lives).
struct OpView {
  int64_t tag = 0;
  llvm::ArrayRef<mlir::linalg::LinalgOp> ops;  // every op carrying the tag; empty when the op is gone
  LoopRanges *ranges = nullptr;                // static loop ranges, computed once per op
  int maxLoops = 12;                           // loops the tile heads and observations describe
  llvm::ArrayRef<int64_t> tileSizes;           // tile-head value k >= 1 means size tileSizes[k - 1]
  int64_t maxVectorElements = 512;
  const FusionPlan *fusion = nullptr;  // what TILED_FUSION would fuse (planFusion), when known

  mlir::linalg::LinalgOp op() const;       // the first op carrying the tag
  llvm::ArrayRef<int64_t> bounds() const;  // its loop ranges
  int numLoops() const;
  std::vector<bool> isReduction() const;  // its iterator kinds, one per loop
  int depth() const;                      // the most loop levels around any of the ops (loopDepth)
  int copies() const;                     // the most ops sharing one scf.for body (maxCopiesPerLoopBody)
};

// Which tile-head values are legal for every op carrying the tag (rows per loop, [0] "no tiling" always), shared by
// the transformations that tile (Tiling.cpp).
struct TileLegality {
  std::vector<std::vector<uint8_t>> rows;
  bool anyShrinks = false;            // some legal size is smaller than its loop's bound
  bool anyParallelShrinks = false;    // ... for a parallel loop
  bool depthLimited = false;          // sizes were refused because the op is nested too deep
  bool parallelDepthLimited = false;  // ... sizes of parallel loops
};
TileLegality tileLegality(const OpView &op);
// The rows for any rule deciding one size of loop i over the bounds of every copy of the op; the loop-depth limit
// (kMaxLoopDepth) is applied on top. tileLegality and peeledTileLegality are two rules.
struct SizeVerdict {
  bool legal = false;
  bool shrinks = false;  // some copy gets a loop level from it
};
using SizeRule = std::function<SizeVerdict(llvm::ArrayRef<llvm::ArrayRef<int64_t>> allBounds, int loop, int64_t size)>;
TileLegality tileLegalityWith(const OpView &op, const SizeRule &rule);
// The same for sizes that need not divide the bounds (PeeledTiling.cpp): the rows of mask_tiles_peeled.
TileLegality peeledTileLegality(const OpView &op);
// The size PEELED_TILING tiles a loop of `bound` by when `size` is asked (0: the loop stays whole).
int64_t peeledTileSize(int64_t bound, int64_t size);

// What an action asks of a transformation (decoded from its heads by the environment).
struct ActionArgs {
  std::vector<int64_t> tileSizes;                   // one per loop of the op (0: not tiled)
  int64_t unrollFactor = 0;                         // 0: the smallest legal factor
  std::vector<int64_t> permutation;                 // INTERCHANGE: the whole new loop order (empty: not complete yet)
  int64_t nextLoop = 0;                             // INTERCHANGE by level pointers: the loop placed next
  std::optional<std::pair<int64_t, int64_t>> swap;  // INTERCHANGE by enumerated swaps: the loops it exchanges
};

class Transformation {
 public:
  virtual ~Transformation() = default;
  virtual llvm::StringRef name() const = 0;  // e.g. "TILING": the value's name in the action space
  virtual Heads heads() const { return Heads::None; }
  virtual bool endsOp() const { return false; }  // once applied, the cursor moves to the next op
  // Refused for the op now, and why. `tiles` is the legality of the tile mask it reads, for the same view:
  // peeledTileLegality for Heads::PeeledTiles, tileLegality otherwise.
  virtual Refusal refusal(const OpView &op, const TileLegality &tiles) const = 0;
  // The legal values of the head it reads when that head has a mask row of its own (Heads::UnrollFactor: value 0,
  // the smallest legal factor, and each legal factor): set in `row` when the transformation is allowed.
  virtual void addHeadValues(const OpView &op, std::vector<uint8_t> &row) const {}
  // The fragment that performs it (values named `%<prefix>_...`); std::nullopt when there is nothing to do (e.g.
  // tiling with every size 0, the identity permutation). Failure emits an error diagnostic on the op.
  virtual mlir::FailureOr<std::optional<Fragment>> plan(const OpView &op, const ActionArgs &args,
                                                        llvm::StringRef prefix) const = 0;
  // What the action does, after "<NAME> op <tag> (<name>)": e.g. " sizes [8, 16, 0]".
  virtual std::string describeArgs(const OpView &op, const ActionArgs &args) const { return ""; }
};

// Every transformation, indexed by its action-type value (Registry.cpp).
const std::vector<const Transformation *> &registry();

// ---- What several transformations share ---------------------------------------------------------------------
// Why a loop-creating transformation is refused for an op inside `depth` loop levels (kMaxLoopDepth).
std::string tooDeepReason(int depth);
// " sizes [a, b, c]": how the tiling transformations describe their sizes.
std::string describeSizes(const OpView &op, const ActionArgs &args);
// What refuses tiled parallelization (and so tiled fusion): no parallel loop to tile, an enclosing scf.forall, or
// unrolled copies sharing a loop body (`checkCopies`).
Refusal parallelTilingRefusal(const OpView &op, const TileLegality &tiles, bool checkCopies);
// What refuses a rewrite of the whole op into new ops (PACK, SPLIT_REDUCTION; `rewrite` names it in the reason, e.g.
// "packing"): no op, not on tensors, more than one output, inside a loop (before tiling only), indexing maps that
// are not projected permutations, dynamic shapes.
Refusal wholeOpRewriteRefusal(mlir::linalg::LinalgOp op, llvm::ArrayRef<int64_t> bounds, llvm::StringRef rewrite);

}  // namespace mlir_rl::transforms
