// What the heuristic policy and the searches propose for the op under the cursor, read from the masks and loop
// bounds of an observation; legality of what a proposal leads to (e.g. whether vectorization is allowed after a
// tiling) is asked of the server by observing the state (a replay that evaluates nothing).
#pragma once

#include <map>
#include <optional>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "Env.h"

namespace mlir_rl::cli {

// How a register tile is shaped: `lanes` elements on the vector loop (the innermost parallel loop, or the innermost
// loop for `innermost`), other parallel loops filled up to `elements` elements in all (each at most `lanes`),
// reduction loops tiled to `reduction` (the innermost loop, when it is one, to `innerReduction` if set).
struct TileShape {
  int64_t lanes = 16;
  int64_t elements = 128;
  int64_t reduction = 1;
  bool innermost = false;
  int64_t innerReduction = 0;  // tile of the innermost loop when it is a reduction (0: `reduction`)
  bool exactLanes =
      false;  // registerTiles drops the tile unless the vector loop (and the blocks it spans) gets all `lanes`
  bool tileWindows = false;  // small reductions (a kernel window) tiled to `reduction` too instead of kept whole
};

// Output-height and kernel-height loops of 2-D convolutions and poolings that vectorization decomposes (it tiles them
// to 1 itself; they do not count towards the vector's size); {-1, -1} for other ops.
std::pair<int, int> decomposedLoops(const std::string &opName, int numLoops);
// Depthwise NHWC convolutions and NHWC poolings: window ops over channels-last maps, vectorized along the channels,
// that reuse no filter across output rows.
bool channelsLastWindowOp(const std::string &opName);

// Tile sizes (0 = untiled) of `shape` for the op of `view`, each a legal value of its head (or the loop's bound);
// `width` (if given) receives the extent of the vector loop after tiling, `span` that times the extents of the vector
// operand's other parallel loops a multi-vector shape took (after PACK, the blocks of the packed input),
// `alongReduction` whether the vector loop is a reduction.
std::vector<int64_t> registerTile(const View &view, const Space &space, const TileShape &shape,
                                  int64_t *width = nullptr, int64_t *span = nullptr, bool *alongReduction = nullptr);
// Whether TILING's masks in `view` allow every size (0 = untiled) of `sizes`.
bool tilesAllowed(const View &view, const Space &space, const std::vector<int64_t> &sizes);
// Vector operands larger than this get a cache tile before the register tile (cacheSplit): half of Sapphire Rapids'
// 2 MiB L2, all of Zen 4's.
constexpr int64_t kCacheSplitBytes = int64_t{1} << 20;
constexpr int64_t kReductionBlock = 64;
// A cache tile to apply before a register tile (`sizes`), and the register tile to apply inside it, where the
// vector's operand (the input read contiguously along the vector loop) exceeds kCacheSplitBytes (`elementBytes` per
// element; counted within one iteration of the parallel loops the tile takes by 1, e.g. a batch) and the op is not a
// convolution. After PACK, a panel of the packed operand's blocks the tile takes, those loops whole inside: every
// row passes over one panel while it is in L2, instead of the whole operand coming from memory once per register
// tile of rows (matmul_transpose_b 128x768x3072 f32: [16, 2, 1, 16] 4.24 ms, [0, 2] then [8, 0, 1] 3.40 ms; a
// block of k measured 3.66-5.67 ms). Otherwise a block of kReductionBlock of the innermost reduction the tile steps
// by 1 (a matmul's k), the tile unchanged inside: matmul 128x768x768 f32 [8, 32, 1] 1.81-1.95 ms, [0, 0, 64] then
// [8, 32, 1] 0.70 ms (a panel of 32 columns 0.78); VGG-16 conv3_1 after IMG2COL 25.6 -> 10.6 ms. nullopt otherwise.
std::optional<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cacheSplit(const View &view,
                                                                                const std::vector<int64_t> &sizes,
                                                                                int64_t elementBytes);
struct RegisterTile {
  std::vector<int64_t> sizes;
  int64_t width = 0;            // extent of the vector loop (1: the "vector" is a scalar)
  bool channels = false;        // poolingChannelTile: preferred over a wider vector along the output's width
  bool alongReduction = false;  // the vector runs along a reduction loop (the innermost one)
};
// NCHW poolings whose window slides along the output's width: a vector of channels (lanes / 2 of them, two outputs
// of the width each), the windows whole. The width's vector reads the input strided (a stride-2 max pool gathers
// every other element) and measured slower than untransformed; channels read the same few input columns of each
// plane. nullopt for other ops, global poolings (width 1) and where the masks forbid a size.
std::optional<RegisterTile> poolingChannelTile(const View &view, const Space &space, int64_t lanes);
// Register tiles worth trying, most promising first, without duplicates or all-untiled vectors. `lanes`: vector
// lanes of the benchmark's element type on this host (16 for f32 on AVX-512); `maxElements`: the session's
// max_vector_elements.
std::vector<RegisterTile> registerTiles(const View &view, const Space &space, int64_t lanes, int64_t maxElements);
// Larger (cache) tiles: reductions and/or parallel loops to 64 or 32; only those that shrink some loop.
std::vector<std::vector<int64_t>> cacheTiles(const View &view, const Space &space);
// Tiles of the parallel loops for tiled fusion (reductions 0): a pooling's channel tile, the register tile's parallel
// part, rows (outer loops by 1, up to 8 of the next, the innermost whole), then every loop by 8, 32, 64.
std::vector<std::vector<int64_t>> fusionTiles(const View &view, const Space &space, int64_t lanes, int64_t maxElements);
// Loop permutations worth trying (not the identity): each loop moved innermost, the two innermost swapped.
std::vector<std::vector<int>> permutations(const View &view, int limit);
// Level-pointer actions of a permutation (the last loop is implied).
Actions interchangeActions(const Space &space, const std::vector<int> &permutation);

std::vector<int64_t> randomAction(const View &view, const Space &space, std::mt19937_64 &rng);

// The heuristic: finish the op under the cursor with a register tile and vectorization (the first register tile,
// most promising first, after which the server allows vectorization and whose vector loop has at least 2 elements;
// img2col first for convolutions that cannot vectorize otherwise), or leave it untransformed when no such schedule
// exists (vectors of one element are scalar code with loop overhead: batch_matmul 12x197x64x197, whose 197s only
// tile by 1, measured no faster than untransformed). Memoized per state.
class Heuristic {
 public:
  Heuristic(Env &env, int64_t lanes, int64_t maxElements) : env_(env), lanes_(lanes), maxElements_(maxElements) {}
  // Actions that finish the current op of the state after `prefix` ({NO_TRANSFORMATION} when nothing helps; empty
  // when the episode is over or the state does not exist).
  Actions finishOp(const Actions &prefix);
  // `prefix` followed by finishOp for every remaining op (or NO_TRANSFORMATION for ops past `heuristicOps` ops from
  // the cursor, so that long models stay cheap to complete).
  Actions complete(const Actions &prefix, int heuristicOps = 1 << 30);
  int64_t lanes() const { return lanes_; }
  int64_t maxElements() const { return maxElements_; }

 private:
  Actions vectorizeWithin(const Actions &prefix, const View &view, int actionsLeft, bool cacheFirst = false);
  // An elementwise op whose producers are memory-bound (a depthwise convolution or an NHWC pooling, possibly behind
  // other elementwise ops) fused with them into small tiles of its own (TILED_FUSION), vectorized; empty otherwise.
  Actions fuseProducers(const Actions &prefix, const View &view, int actionsLeft);
  Env &env_;
  int64_t lanes_, maxElements_;
  std::map<std::string, Actions> memo_;
};

// Vector lanes for a dtype name ("f32", "f64", ...) with 512-bit registers.
int64_t lanesFor(const std::string &dtype);
// How many output elements share each element of the input PACK would transpose (the product of the parallel loops
// that input does not use): 0 when no input reads the innermost parallel loop strided or the view has no access
// information. The heuristic packs when it is at least 8, and splits the reduction (SPLIT_REDUCTION) below that.
int64_t packedInputReuse(const View &view);

}  // namespace mlir_rl::cli
