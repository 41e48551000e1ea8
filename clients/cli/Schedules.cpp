#include "Schedules.h"

#include <algorithm>
#include <set>

namespace mlir_rl::cli {

namespace {

struct Choice {
  int64_t size = 0;    // the head's value (0 = untiled)
  int64_t extent = 0;  // the loop's extent after tiling
};

// The largest legal tile of loop `i` not above `cap`: untiled when the whole loop fits, else the largest size the
// mask allows (a size equal to the bound counts as untiled); untiled when nothing fits.
Choice largestWithin(const View &view, const Space &space, int i, int64_t cap) {
  int64_t bound = view.bounds[i];
  if (bound <= cap) return {0, bound};
  Choice best{0, bound};
  bool found = false;
  for (size_t k = 1; k < space.tileSizes.size(); ++k) {
    int64_t s = space.tileSizes[k];
    if (s > cap || !view.tileLegal(i, static_cast<int>(k))) continue;
    if (!found || s > best.size) best = {s, s}, found = true;
  }
  return best;
}

bool isReduction(const View &view, int i) { return view.iterators[i] == 2; }

// Loops of the inputs read contiguously along loop `pivot` (the vector loop): a matmul's B; after PACK, the packed B.
uint64_t vectorOperandLoops(const View &view, int pivot) {
  uint64_t loops = 0;
  for (size_t a = 0; pivot >= 0 && pivot < 64 && a < view.inputLoops.size(); ++a)
    if (view.inputInnermostLoops[a] >> pivot & 1) loops |= view.inputLoops[a];
  return loops;
}

// Reduction loops up to this bound are kept whole in a register tile when the vector has room.
constexpr int64_t kSmallReduction = 8;

bool allParallel(const View &view) {
  return std::none_of(view.iterators.begin(), view.iterators.end(), [](int it) { return it == 2; });
}

}  // namespace

bool channelsLastWindowOp(const std::string &opName) {
  return opName == "linalg.depthwise_conv_2d_nhwc_hwc" || opName.rfind("linalg.pooling_nhwc_", 0) == 0;
}

std::pair<int, int> decomposedLoops(const std::string &opName, int numLoops) {
  // Loop orders: conv_2d_nhwc_hwcf (n, oh, ow, f, kh, kw, c); conv_2d_nchw_fchw (n, f, oh, ow, c, kh, kw);
  // depthwise_conv_2d_nhwc_hwc and pooling_nhwc_* (n, oh, ow, c, kh, kw); pooling_nchw_* (n, c, oh, ow, kh, kw).
  std::pair<int, int> loops{-1, -1};
  if (opName == "linalg.conv_2d_nhwc_hwcf")
    loops = {1, 4};
  else if (opName == "linalg.conv_2d_nchw_fchw")
    loops = {2, 5};
  else if (channelsLastWindowOp(opName))
    loops = {1, 4};
  else if (opName.rfind("linalg.pooling_nchw_", 0) == 0)
    loops = {2, 4};
  if (loops.second >= numLoops) return {-1, -1};
  return loops;
}

std::vector<int64_t> registerTile(const View &view, const Space &space, const TileShape &shape, int64_t *width,
                                  int64_t *span, bool *alongReduction) {
  int n = view.numLoops();
  std::vector<int64_t> sizes(n, 0);
  if (n == 0) return sizes;
  auto [oh, kh] = decomposedLoops(view.opName, n);
  auto skipped = [&](int i) { return i == oh || i == kh; };
  int pivot = -1;
  for (int i = n - 1; i >= 0 && pivot < 0; --i)
    if (!skipped(i) && (shape.innermost || !isReduction(view, i))) pivot = i;
  if (alongReduction) *alongReduction = pivot >= 0 && isReduction(view, pivot);
  int64_t elements = 1;
  if (width) *width = 1;
  uint64_t vectorOperand = vectorOperandLoops(view, pivot);
  // Whether an input indexed by neither the vector loop nor loop `i` is broadcast to the vectors of every `i` (a
  // matmul's A[m, k] after PACK, for each block of B).
  auto broadcastAcross = [&](int i) {
    for (size_t a = 0; a < view.inputLoops.size(); ++a)
      if (!(view.inputLoops[a] >> pivot & 1) && !(view.inputLoops[a] >> i & 1)) return true;
    return false;
  };
  int64_t spanned = 1;
  uint64_t spanLoops = 0;
  if (pivot >= 0) {
    Choice c = largestWithin(view, space, pivot, shape.lanes);
    sizes[pivot] = c.size;
    elements *= c.extent;
    spanned = c.extent;
    if (width) *width = c.extent;
    // A multi-vector shape whose vector loop is whole but narrower (after PACK: blocks of 16) spans the vector
    // operand's other parallel loops, inner first: 2 blocks of 16 are the 32 lanes of "8 rows of two vectors".
    // Only blocks an input is broadcast across (its value serves every block): after SPLIT_REDUCTION both inputs are
    // read along the lanes, and a row's mean (a layer norm's variance) differs per row.
    for (int i = n - 1; shape.exactLanes && c.size == 0 && i >= 0 && spanned < shape.lanes; --i) {
      if (i == pivot || skipped(i) || isReduction(view, i) || i >= 64 || !(vectorOperand >> i & 1) ||
          !broadcastAcross(i))
        continue;
      Choice b = largestWithin(view, space, i, shape.lanes / spanned);
      sizes[i] = b.size;
      elements *= b.extent;
      spanned *= b.extent;
      spanLoops |= uint64_t{1} << i;
    }
  }
  if (span) *span = spanned;
  // Reductions next, inner first: small ones (a kernel window, a spin or color index) whole while the vector stays
  // within `elements`, others tiled to `reduction`.
  for (int i = n - 1; i >= 0; --i) {
    if (i == pivot || skipped(i) || !isReduction(view, i)) continue;
    int64_t bound = view.bounds[i];
    int64_t tile = i == n - 1 && shape.innerReduction > 0 ? shape.innerReduction : shape.reduction;
    int64_t cap = !shape.tileWindows && bound <= kSmallReduction && elements * bound <= shape.elements ? bound : tile;
    Choice c = largestWithin(view, space, i, cap);
    sizes[i] = c.size;
    elements *= c.extent;
  }
  // Parallel loops, inner first, fill the rest (each at most a vector's lanes): first those the vector's operand (an
  // input read contiguously along the vector) does not use, so that each of its vectors serves every row (a matmul's
  // rows of A; after PACK, rows of m rather than more blocks of the packed B: [8, 1, 1, 16] measured far faster
  // than [1, 8, 1, 16]), then the others.
  for (int pass = 0; pass < 2; ++pass)
    for (int i = n - 1; i >= 0; --i) {
      if (i == pivot || skipped(i) || isReduction(view, i) || (i < 64 && (spanLoops >> i & 1))) continue;
      bool used = i < 64 && (vectorOperand >> i & 1);
      if (used != (pass == 1)) continue;
      int64_t cap = std::min<int64_t>(shape.lanes, std::max<int64_t>(1, shape.elements / elements));
      Choice c = largestWithin(view, space, i, cap);
      sizes[i] = c.size;
      elements *= c.extent;
    }
  // Depthwise NHWC convolutions and NHWC poolings: 2 rows of the output's height outside the tile. Untiled, the row
  // loop that vectorization tiles to 1 runs inside the tile of width and channels, so each tile walks down the whole
  // image (a row of the input apart per step); these ops reuse no filter across rows the way a convolution's vector
  // of filters does (conv 1x58x58x64 3x3: [0, 0, 4, 16, 0, 1, 8] 1.90 ms, [0, 1, ...] 3.18, [0, 2, ...] 3.74).
  // Replayed, ms (rows untiled / 1 / 2 / 4): depthwise 3x3 114x114x32 f32 0.309 / 0.219 / 0.213 / 0.216 (untransformed
  // 0.303), f64 0.760 / 0.500 / 0.468 / 0.409 (0.657); 3x3/2 114x114x96 f32 0.629 / 0.326 / 0.329 / 0.330 (0.316), f64
  // 1.126 / 0.606 / 0.627 / 0.667 (0.648); 5x5 32x32x240 f32 0.161 / 0.121 / 0.120 / 0.164; 3x3 58x58x144 f32
  // 0.204 / 0.212 / 0.210 / 0.200, f64 0.726 / 0.473 / 0.472 / 0.483 (0.553); avgpool 2x2/2 56x56x128 (pool's tile
  // [0, r, 4, 16]) 0.152 / 0.109 / 0.097.
  if (oh >= 0 && channelsLastWindowOp(view.opName)) sizes[oh] = largestWithin(view, space, oh, 2).size;
  return sizes;
}

std::optional<std::pair<std::vector<int64_t>, std::vector<int64_t>>> cacheSplit(const View &view,
                                                                                const std::vector<int64_t> &sizes,
                                                                                int64_t elementBytes) {
  int n = std::min<int>(view.numLoops(), static_cast<int>(sizes.size()));
  // Not convolutions: their vector operand is the filter, and a panel of filters re-reads the whole image.
  if (decomposedLoops(view.opName, view.numLoops()).first >= 0) return std::nullopt;
  int pivot = -1;
  for (int i = n - 1; i >= 0 && pivot < 0; --i)
    if (!isReduction(view, i)) pivot = i;
  if (pivot < 0 || pivot >= 64) return std::nullopt;
  uint64_t vectorOperand = vectorOperandLoops(view, pivot);
  // Its footprint within one iteration of the parallel loops the tile takes by 1 (a batch_matmul's batch: each batch's
  // B alone).
  int64_t footprint = elementBytes;
  for (int i = 0; i < view.numLoops() && i < 64; ++i)
    if ((vectorOperand >> i & 1) && !(i < n && sizes[i] == 1 && !isReduction(view, i)))
      footprint *= std::max<int64_t>(1, view.bounds[i]);
  if (footprint <= kCacheSplitBytes) return std::nullopt;
  // Blocks of a packed operand the tile takes (after PACK): a panel of them first, the tile's rest inside it.
  std::vector<int64_t> panel(sizes.size(), 0), rest = sizes;
  bool any = false;
  for (int i = 0; i < n && i < 64; ++i)
    if (i != pivot && !isReduction(view, i) && (vectorOperand >> i & 1) && sizes[i] > 1 && sizes[i] < view.bounds[i]) {
      panel[i] = sizes[i];
      rest[i] = 0;
      any = true;
    }
  if (any) return std::make_pair(std::move(panel), std::move(rest));
  // Otherwise a block of the innermost reduction the tile steps by 1 (a matmul's k), the whole tile inside it.
  for (int i = n - 1; i >= 0; --i)
    if (i < 64 && isReduction(view, i) && (vectorOperand >> i & 1) && sizes[i] == 1 &&
        view.bounds[i] > kReductionBlock) {
      std::vector<int64_t> block(sizes.size(), 0);
      block[i] = kReductionBlock;
      return std::make_pair(std::move(block), sizes);
    }
  return std::nullopt;
}

bool tilesAllowed(const View &view, const Space &space, const std::vector<int64_t> &sizes) {
  for (size_t i = 0; i < sizes.size(); ++i)
    if (!view.tileLegal(static_cast<int>(i), space.tileIndex(sizes[i]))) return false;
  return true;
}

std::optional<RegisterTile> poolingChannelTile(const View &view, const Space &space, int64_t lanes) {
  // (n, c, oh, ow, kh, kw). Max pool 3x3/2 1x64x114x114 f32, replayed side by side: untransformed 0.82 ms, the
  // width's vector PT[0, 2, 0, 16] 1.42 (against 0.92 untransformed in that run); channels [0, 8, 1, 2] 0.52-0.54,
  // [0, 8, 1, 1] 0.78-0.80, [0, 4, 1, 2] 0.70, [0, 16, 1, 1] 0.89-0.91. VGG-16 pool4 (2x2/2, 512 channels):
  // untransformed 0.25-0.27 ms, [0, 8, 1, 2] 0.165 (its best); pool2 (128 channels, 112x112 in) 0.68 against 0.68-0.70.
  if (view.opName.rfind("linalg.pooling_nchw_", 0) != 0 || view.numLoops() != 6 || view.bounds[3] <= 1)
    return std::nullopt;
  const int64_t caps[6] = {1, std::max<int64_t>(1, lanes / 2), 1, 2, 0, 0};
  RegisterTile t;
  t.sizes.assign(6, 0);
  t.channels = true;
  for (int i = 0; i < 4; ++i) {
    Choice c = largestWithin(view, space, i, caps[i]);
    if (c.extent > caps[i]) return std::nullopt;  // the mask allows no size that small
    t.sizes[i] = c.size;
    if (i == 1) t.width = c.extent;
  }
  if (t.width < 2) return std::nullopt;
  return t;
}

std::vector<RegisterTile> registerTiles(const View &view, const Space &space, int64_t lanes, int64_t maxElements) {
  std::vector<TileShape> shapes;
  auto add = [&](int64_t l, int64_t e, int64_t r, bool innermost, int64_t innerReduction = 0, bool exact = false,
                 bool tileWindows = false) {
    if (l < 1) return;
    shapes.push_back({l, std::min(e, maxElements), r, innermost, innerReduction, exact, tileWindows});
  };
  // Most promising first: the contraction shape of a register-blocked matmul (8 rows of one vector), then the same
  // with the innermost loop as the vector loop, then more and fewer elements, then reductions tiled by more than 1,
  // then half-width vectors. Ops without reductions start with one vector: LLVM vectorizes their untransformed loops
  // already, and 2-D vectors measured slower (relu 1x64x112x112 f32: untransformed 67.6 us, one vector 67.8 us,
  // 4 rows 72.3 us, 8 rows 75.1 us; add 1x64x56x56: 28.1, 24.6, 25.3 us).
  if (allParallel(view)) add(lanes, lanes, 1, false);
  // Depthwise NHWC convolutions: 4 rows of the output's width of a vector of channels, the kernel's width whole.
  // Replayed alternating twice, ms (rows 1 / 2 / 4; untransformed): 3x3 on 58x58x144 0.220 / 0.193-0.196 /
  // 0.185-0.189 (0.25); 5x5 on 32x32x240 0.117-0.120 / 0.110-0.114 / 0.096-0.098 (0.26); 3x3 on 114x114x32 0.26 /
  // 0.25-0.31 / 0.233 (0.19: LLVM's vectorization of the untransformed loops wins on this one).
  if (view.opName == "linalg.depthwise_conv_2d_nhwc_hwc" && view.numLoops() == 6)
    add(lanes, 4 * lanes * std::max<int64_t>(1, view.bounds[5]), 1, false);
  // Convolutions whose innermost loop is the input-channel reduction (NHWC): a vector of channels too (a 1x1
  // conv_2d_nhwc_hwcf 1x28x28x32 -> 192 f32: channels by 1 measured 0.24 ms, untransformed 0.13 ms, by 16 0.093 ms).
  // First half a vector of them, the kernel's width by 1 and more rows of the output's width: 4 rows of 16 filters
  // by 8 channels, [0, 0, 4, 16, 0, 1, 8], against [0, 0, 2, 16, 0, 1, 16] (replayed alternating, ms): 3x3 convs
  // 1x58x58x64 -> 64 1.37-1.60 against 3.19-3.37 (searches' best 1.35-1.45), 1x30x30x128 -> 128 1.57-1.60 against
  // 3.33-3.37; 1x1 1x56x56x64 -> 256 1.12-1.28 against 1.24-1.42.
  if (decomposedLoops(view.opName, view.numLoops()).first >= 0 && isReduction(view, view.numLoops() - 1) &&
      view.bounds.back() > kSmallReduction) {
    add(lanes, 32 * lanes, 1, false, lanes / 2, false, true);
    add(lanes, 32 * lanes, 1, false, lanes);
    add(lanes, 8 * lanes, 1, false, lanes);
  }
  // Contractions: 8 rows of two vectors first, then 4 rows of four (16 accumulators either way). Per step of the
  // reduction, 8 rows of one vector load 9 values for 8 FMAs, 16 rows of one 17 for 16, which keeps the load ports
  // as busy as the two FMA units; 8 rows of two load 10 for 16. Matmul 512^3 f32 on a Sapphire Rapids core (peak
  // 240 GFLOP/s), replayed side by side: [8, 32, 1] 1.28 ms (210 GFLOP/s), [4, 64, 1] 1.33, [16, 16, 1] 1.48; in a
  // slower phase of the shared machine 1.75, 1.80, 2.08 and [8, 16, 1] 2.35. Only where the vector loop takes all
  // the lanes (a narrower vector is one of the shapes below).
  if (!allParallel(view)) {
    add(2 * lanes, 16 * lanes, 1, false, 0, true);
    add(4 * lanes, 16 * lanes, 1, false, 0, true);
  }
  add(lanes, 8 * lanes, 1, false);
  add(lanes, 8 * lanes, 1, true);
  add(lanes, 16 * lanes, 1, false);
  add(lanes, 4 * lanes, 1, false);
  add(lanes, 32 * lanes, 1, false);
  add(lanes, 16 * lanes, 1, true);
  add(lanes, 4 * lanes, 1, true);
  add(lanes, 32 * lanes, 1, true);
  add(lanes, 8 * lanes, 4, false);
  add(lanes, 4 * lanes, 4, false);
  add(lanes, 2 * lanes, 1, false);
  add(lanes, lanes, 1, false);
  add(lanes, 8 * lanes, 2, false);
  add(lanes, 2 * lanes, 1, true);
  add(lanes / 2, 4 * lanes, 1, false);
  add(lanes / 2, 4 * lanes, 1, true);
  add(lanes / 2, 2 * lanes, 1, false);
  add(lanes / 4, lanes, 1, false);
  add(lanes / 4, lanes, 1, true);
  add(1, 1, 1, false);
  std::vector<RegisterTile> out;
  std::set<std::vector<int64_t>> seen;
  if (std::optional<RegisterTile> t = poolingChannelTile(view, space, lanes)) {
    seen.insert(t->sizes);
    out.push_back(std::move(*t));
  }
  for (const TileShape &s : shapes) {
    RegisterTile t;
    int64_t span = 0;
    t.sizes = registerTile(view, space, s, &t.width, &span, &t.alongReduction);
    if (s.exactLanes && span != s.lanes) continue;
    // A size that does not divide its loop (PEELED_TILING) leaves a remainder copy, vectorized as it is: one wider
    // than a vector and not a multiple of it is a ragged vector, far slower, which matters where the remainder is a
    // large part of the loop (NCHW conv 1x512x9x9 3x3 after IMG2COL, 49 columns by 32 leave 17: `PT[0,8,32,1] V`
    // 51 ms, `PT[0,8,16,1] V` 2.2 ms, untransformed 67 ms; 11x11/4 on 227x227, 3025 columns by 32 leave 17 too:
    // `PT[0,8,32,1] V` 2.54 ms, `PT[0,8,16,1] V` 3.72).
    bool ragged = false;
    for (size_t i = 0; i < t.sizes.size() && i < view.bounds.size(); ++i) {
      int64_t rest = t.sizes[i] > 0 ? view.bounds[i] % t.sizes[i] : 0;
      ragged |= rest > lanes && rest % lanes != 0 && 8 * rest > view.bounds[i];
    }
    if (ragged) continue;
    bool any = std::any_of(t.sizes.begin(), t.sizes.end(), [](int64_t x) { return x != 0; });
    if (any && seen.insert(t.sizes).second) out.push_back(std::move(t));
  }
  return out;
}

std::vector<std::vector<int64_t>> cacheTiles(const View &view, const Space &space) {
  int n = view.numLoops();
  std::vector<std::vector<int64_t>> out;
  std::set<std::vector<int64_t>> seen;
  int innerParallel = -1;
  for (int i = 0; i < n; ++i)
    if (!isReduction(view, i)) innerParallel = i;
  auto add = [&](auto pick) {
    std::vector<int64_t> t(n, 0);
    bool shrinks = false;
    for (int i = 0; i < n; ++i) {
      int64_t cap = pick(i);
      if (cap <= 0) continue;
      Choice c = largestWithin(view, space, i, cap);
      t[i] = c.size;
      shrinks |= c.size != 0;
    }
    if (shrinks && seen.insert(t).second) out.push_back(t);
  };
  add([&](int i) { return isReduction(view, i) ? 64 : 0; });
  add([&](int i) { return i == innerParallel || isReduction(view, i) ? 64 : 0; });
  add([&](int i) { return isReduction(view, i) ? 0 : 64; });
  add([&](int i) { return 32; });
  add([&](int i) { return isReduction(view, i) ? 32 : 0; });
  add([&](int i) { return i == innerParallel ? 64 : 0; });
  add([&](int i) { return isReduction(view, i) ? 16 : 0; });
  return out;
}

std::vector<std::vector<int64_t>> fusionTiles(const View &view, const Space &space, int64_t lanes,
                                              int64_t maxElements) {
  int n = view.numLoops();
  std::vector<std::vector<int64_t>> out;
  std::set<std::vector<int64_t>> seen;
  auto add = [&](std::vector<int64_t> t) {
    bool shrinks = false;
    for (int i = 0; i < n; ++i) {
      if (isReduction(view, i)) t[i] = 0;
      shrinks |= t[i] != 0;
    }
    if (shrinks && seen.insert(t).second) out.push_back(std::move(t));
  };
  if (std::optional<RegisterTile> t = poolingChannelTile(view, space, lanes)) add(t->sizes);
  add(registerTile(view, space, {lanes, std::min<int64_t>(8 * lanes, maxElements), 1, false}));
  // Rows: the outer loops by 1, up to 8 rows of the innermost loop, which stays whole (one channel's rows of an NCHW
  // map). A depthwise NCHW convolution, which MLIR cannot vectorize, fused with its bias into its ReLU6's tile of
  // rows: MobileNetV2 block3 depthwise `TF[0,1,8]` 0.27-0.28 ms, untransformed 2.3-2.4, `TF[0,8,8,8]` 1.35 (replayed
  // alternating; tiling the convolution alone by [0, 1, 8] 2.27). Where 8 does not divide the rows, fewer (block12,
  // 14 rows: `TF[0,1,2]` 0.145 ms, untransformed 0.57, the whole plane `TF[0,1]` 0.35).
  if (n >= 2 && allParallel(view)) {
    std::vector<int64_t> rows(n, 0);
    for (int i = 0; i + 1 < n; ++i) rows[i] = largestWithin(view, space, i, i + 2 == n ? 8 : 1).size;
    add(rows);
  }
  for (int64_t cap : {8, 32, 64}) {
    std::vector<int64_t> t(n, 0);
    for (int i = 0; i < n; ++i) t[i] = largestWithin(view, space, i, cap).size;
    add(t);
  }
  return out;
}

std::vector<std::vector<int>> permutations(const View &view, int limit) {
  int n = view.numLoops();
  std::vector<std::vector<int>> out;
  if (n < 2) return out;
  std::set<std::vector<int>> seen;
  std::vector<int> identity(n);
  for (int i = 0; i < n; ++i) identity[i] = i;
  seen.insert(identity);
  auto add = [&](std::vector<int> p) {
    if (static_cast<int>(out.size()) < limit && seen.insert(p).second) out.push_back(std::move(p));
  };
  // Each parallel loop moved innermost (inner loops first), then each reduction moved innermost, then the two
  // innermost swapped, then each loop moved outermost.
  for (int pass = 0; pass < 2; ++pass)
    for (int j = n - 1; j >= 0; --j) {
      if ((pass == 0) == isReduction(view, j)) continue;
      std::vector<int> p;
      for (int i = 0; i < n; ++i)
        if (i != j) p.push_back(i);
      p.push_back(j);
      add(p);
    }
  std::vector<int> swapped = identity;
  std::swap(swapped[n - 1], swapped[n - 2]);
  add(swapped);
  for (int j = 1; j < n; ++j) {
    std::vector<int> p{j};
    for (int i = 0; i < n; ++i)
      if (i != j) p.push_back(i);
    add(p);
  }
  return out;
}

Actions interchangeActions(const Space &space, const std::vector<int> &permutation) {
  Actions out;
  for (size_t i = 0; i + 1 < permutation.size(); ++i) out.push_back(space.pointer(permutation[i]));
  return out;
}

std::vector<int64_t> randomAction(const View &view, const Space &space, std::mt19937_64 &rng) {
  std::vector<int64_t> action(space.nvec.size(), 0);
  auto pick = [&](const std::vector<uint8_t> &mask) -> int64_t {
    std::vector<int64_t> legal;
    for (size_t v = 0; v < mask.size(); ++v)
      if (mask[v]) legal.push_back(static_cast<int64_t>(v));
    return legal.empty() ? 0 : legal[std::uniform_int_distribution<size_t>(0, legal.size() - 1)(rng)];
  };
  action[0] = pick(view.maskType);
  const auto &rows =
      action[0] == space.peeledTiling && !view.maskTilesPeeled.empty() ? view.maskTilesPeeled : view.maskTiles;
  for (int i = 0; i < space.maxLoops && i < static_cast<int>(rows.size()); ++i) action[1 + i] = pick(rows[i]);
  action.back() = pick(view.maskInterchange);
  return action;
}

int64_t lanesFor(const std::string &dtype) {
  if (dtype == "f64" || dtype == "i64") return 8;
  if (dtype == "f16" || dtype == "bf16" || dtype == "i16") return 32;
  if (dtype == "i8") return 64;
  return 16;  // f32, i32, and mixed
}

int64_t packedInputReuse(const View &view) {
  int pivot = -1;  // the innermost parallel loop: the output's contiguous one in the ops PACK applies to
  for (int i = view.numLoops() - 1; i >= 0 && pivot < 0; --i)
    if (!isReduction(view, i)) pivot = i;
  if (pivot < 0 || pivot >= 64) return 0;
  uint64_t strided = 0;  // loops of the inputs that read the pivot other than innermost
  for (size_t a = 0; a < view.inputLoops.size(); ++a)
    if ((view.inputLoops[a] >> pivot & 1) && !(view.inputInnermostLoops[a] >> pivot & 1)) strided |= view.inputLoops[a];
  if (!strided) return 0;
  int64_t rows = 1;
  for (int i = 0; i < view.numLoops() && i < 64; ++i)
    if (!isReduction(view, i) && !(strided >> i & 1)) rows *= std::max<int64_t>(1, view.bounds[i]);
  return rows;
}

// ---------------------------------------------------------------------------------------------------------------
// Heuristic

Actions Heuristic::vectorizeWithin(const Actions &prefix, const View &view, int actionsLeft, bool cacheFirst) {
  const Space &space = env_.space();
  if (view.legal(space.vectorization)) return {space.make(space.vectorization)};
  if (actionsLeft < 2) return {};
  // The first register tile that lets the op vectorize, by TILING and by PEELED_TILING (sizes that need not divide
  // the loops); a pooling's channel tile wins, then a vector along a parallel loop (after IMG2COL on 9x9 maps, 49
  // columns: TILING's vector along the 4608 of the reduction `T[0,8,1,16] V` 30 ms, PEELED_TILING's along the columns
  // `PT[0,8,16,1] V` 2.2), then the wider vector, then a register tile enough larger to pay for the remainder's code
  // (below), else TILING. With `cacheFirst`, the cache
  // tile cacheSplit gives for the register tile comes first, where the masks allow it.
  struct Pick {
    Actions actions;
    bool channels = false, parallel = false;  // a pooling's channel tile; a vector along a parallel loop
    int64_t width = 0, elements = 0;          // vector width, register tile elements
  };
  auto vectorizes = [&](const Actions &tiled) {
    std::optional<View> next = env_.observe(tiled);
    return next && !next->done && next->opIndex == view.opIndex && next->legal(space.vectorization);
  };
  auto first = [&](int type, const View &shaped) -> Pick {
    if (type < 0 || !view.legal(type)) return {};
    for (const RegisterTile &t : registerTiles(shaped, space, lanes_, maxElements_)) {
      if (t.width < 2) continue;
      Pick pick{{}, t.channels, !t.alongReduction, t.width, 1};
      for (size_t i = 0; i < t.sizes.size() && i < view.bounds.size(); ++i)
        pick.elements *= t.sizes[i] ? t.sizes[i] : view.bounds[i];
      auto split = cacheFirst && actionsLeft >= 3 && view.legal(space.tiling) ? cacheSplit(shaped, t.sizes, 64 / lanes_)
                                                                              : std::nullopt;
      if (split && tilesAllowed(view, space, split->first)) {
        Actions tiles = prefix;
        tiles.push_back(space.tiles(space.tiling, split->first));
        tiles.push_back(space.tiles(type, split->second));
        if (vectorizes(tiles)) {
          pick.actions.assign(tiles.end() - 2, tiles.end());
          return pick;
        }
      }
      Actions tiles = prefix;
      tiles.push_back(space.tiles(type, t.sizes));
      if (vectorizes(tiles)) {
        pick.actions = {tiles.back()};
        return pick;
      }
    }
    return {};
  };
  Pick best = first(space.tiling, view);
  if (!view.maskTilesPeeled.empty()) {
    Pick p = first(space.peeledTiling, view.peeled());
    // More elements pay for the remainder's code when many more: M = 197 gets 8 rows peeled against 1; twice the
    // rows did not pay on a convolution, whose remainder repeats the whole reduction (NHWC 1x14x14x1024 -> 256 f32,
    // 14 by 4: `PT[0,0,4,16,0,0,8] V` 1.23-1.29 ms, `T[0,0,2,16,0,0,8] V` 1.12-1.14; f64 28 by 8 against 4:
    // 3.30-3.62 against 3.38-3.62). A pooling's channel tile is the exception: its remainder is one output column
    // (NCHW max pools, 2 columns against 1: 27 columns `PT[0,8,1,2] V` 0.107-0.118 ms, `T[0,8,1,1] V` 0.150; VGG-16
    // pool5, 7 columns, 0.0385 against 0.0498).
    bool better = p.channels != best.channels   ? p.channels
                  : p.parallel != best.parallel ? p.parallel
                  : p.width != best.width       ? p.width > best.width
                                                : p.elements >= (p.channels ? 2 : 4) * best.elements;
    if (better) best = std::move(p);
  }
  if (best.width == 0) return {};
  Actions tiled = std::move(best.actions);
  tiled.push_back(space.make(space.vectorization));
  return tiled;
}

Actions Heuristic::fuseProducers(const Actions &prefix, const View &view, int actionsLeft) {
  const Space &space = env_.space();
  if (view.actionsOnOp != 0 || actionsLeft < 2 || !allParallel(view) || !view.legal(space.fusion)) return {};
  // The ops after this one, untouched: the first that is not elementwise decides (a bias between a depthwise
  // convolution and its ReLU6 fuses along).
  Actions skip = prefix;
  std::string producer;
  std::optional<View> untouched;  // the op after this one with this one left as it is
  for (int k = 0; k < 3 && producer.empty(); ++k) {
    skip.push_back(space.make(space.noTransformation));
    std::optional<View> next = env_.observe(skip);
    if (!next || next->done) return {};
    if (k == 0) untouched = next;
    if (!allParallel(*next)) producer = next->opName;
  }
  // NHWC: one vector of channels of one output (avgpool 3x3 1x37x37x192 f32, the pool and its division: untransformed
  // 0.145-0.152 ms, each op vectorized alone 0.133-0.139, `TF[0,1,1,16] V` 0.065, one row of outputs `TF[0,1]` 0.140;
  // 2x2/2 56x56x128 0.050-0.052 / 0.076 / 0.034-0.044 / 0.067; 7x7 on 7x7x2048 0.0106 / 0.0066 / 0.0054). NCHW
  // depthwise (MobileNetV2, which MLIR cannot vectorize): one channel's 8 rows, the width whole (block3 `TF[0,1,8]`
  // 0.27-0.28 ms, untransformed 2.3-2.4; tiling the convolution alone by [0, 1, 8] 2.27).
  std::vector<int64_t> tile;
  int n = view.numLoops();
  if (channelsLastWindowOp(producer)) {
    tile = registerTile(view, space, {lanes_, lanes_, 1, false});
  } else if (producer == "linalg.depthwise_conv_2d_nchw_chw" && n >= 2) {
    tile.assign(n, 0);
    for (int i = 0; i + 1 < n; ++i) tile[i] = largestWithin(view, space, i, i + 2 == n ? 8 : 1).size;
  }
  // Only tiles that split a loop other than the innermost: a global pooling's one output position is faster unfused
  // (7x7 on 7x7x512 f32: 0.0015-0.0018 ms each op alone, 0.0024-0.0025 fused by channels).
  bool positions = false;
  for (int i = 0; i + 1 < static_cast<int>(tile.size()); ++i) positions |= tile[i] != 0 && tile[i] < view.bounds[i];
  if (!positions) return {};
  Actions fused = prefix;
  fused.push_back(space.tiles(space.fusion, tile));
  std::optional<View> inside = env_.observe(fused);
  if (!inside || inside->done || inside->opIndex != view.opIndex) return {};
  Actions within = vectorizeWithin(fused, *inside, actionsLeft - 1);
  if (within.empty()) return {};
  // Only where the producer did fuse: the op after this one now iterates over less than it did untouched.
  Actions done = fused;
  done.insert(done.end(), within.begin(), within.end());
  std::optional<View> after = env_.observe(done);
  if (!after || after->done || after->iterationSpace() >= untouched->iterationSpace()) return {};
  within.insert(within.begin(), fused.back());
  return within;
}

Actions Heuristic::finishOp(const Actions &prefix) {
  std::string key = formatActions(prefix);
  if (auto it = memo_.find(key); it != memo_.end()) return it->second;
  const Space &space = env_.space();
  std::optional<View> view = env_.observe(prefix);
  Actions out;
  if (view && !view->done) {
    int left = env_.actionsPerOp() - view->actionsOnOp;
    if (view->interchangePending) {
      // Close an open interchange with the loops not placed yet in their order, then go on from there.
      int needed = view->numLoops() - 1 - view->placedLoops;
      for (int i = 0; i < view->numLoops() && needed > 0; ++i)
        if (i < static_cast<int>(view->maskInterchange.size()) && view->maskInterchange[i]) {
          out.push_back(space.pointer(i));
          --needed;
        }
      Actions closed = prefix;
      closed.insert(closed.end(), out.begin(), out.end());
      Actions rest = finishOp(closed);
      out.insert(out.end(), rest.begin(), rest.end());
    } else {
      // One action that rewrites the op (PACK, SPLIT_REDUCTION, IMG2COL), then the register tile that vectorizes the
      // result.
      auto rewriteThenVectorize = [&](int type, bool cacheFirst = false) -> Actions {
        Actions rewritten = prefix;
        rewritten.push_back(space.make(type));
        std::optional<View> next = env_.observe(rewritten);
        if (!next || next->done || next->opIndex != view->opIndex) return {};
        Actions within = vectorizeWithin(rewritten, *next, left - 1, cacheFirst);
        if (within.empty()) return {};
        within.insert(within.begin(), rewritten.back());
        return within;
      };
      // A contraction whose output's contiguous loop is strided in an input (matmul_transpose_b), packed first when
      // the packed input is reused by enough rows to pay for its blocked transposition (BERT FFN up, m = 128:
      // 12.3 -> 5.3 ms; a matrix-vector product, m = 1, is faster unpacked), then a panel of the packed input
      // (cacheSplit) outside 8 rows of two vectors.
      int64_t reuse = packedInputReuse(*view);
      if (space.pack >= 0 && left >= 3 && view->actionsOnOp == 0 && view->legal(space.pack) && reuse >= 8)
        out = rewriteThenVectorize(space.pack, true);
      // Fewer rows (a matrix-vector product): the reduction split into lanes instead, one vector of partial sums per
      // output (ResNet-18's classifier 1x512 by 1000x512: 0.031 ms split, 0.076 ms for the best unsplit schedule).
      if (out.empty() && space.split >= 0 && left >= 3 && view->actionsOnOp == 0 && reuse > 0 && reuse < 8 &&
          view->legal(space.split))
        out = rewriteThenVectorize(space.split);
      // NCHW convolutions: as a contraction after img2col first. Vectorized in their own form they get a vector
      // along the output's width and a few filters (VGG-16 conv3_1: [0, 2, 0, 16, 1] 287 ms; IMG2COL and
      // [0, 8, 32, 1] 13 ms, the untransformed reference 446 ms).
      bool img2colFirst = view->opName == "linalg.conv_2d_nchw_fchw";
      if (out.empty() && img2colFirst && left >= 3 && view->legal(space.img2col))
        out = rewriteThenVectorize(space.img2col, true);
      if (out.empty()) out = fuseProducers(prefix, *view, left);
      if (out.empty()) out = vectorizeWithin(prefix, *view, left, true);
      // Convolutions MLIR cannot vectorize in their own form: as a contraction after img2col.
      if (out.empty() && !img2colFirst && left >= 3 && view->legal(space.img2col))
        out = rewriteThenVectorize(space.img2col, true);
      if (out.empty()) out.push_back(space.make(space.noTransformation));
    }
  }
  memo_[key] = out;
  return out;
}

Actions Heuristic::complete(const Actions &prefix, int heuristicOps) {
  Actions out = prefix;
  std::optional<View> view = env_.observe(out);
  if (!view) return out;
  int firstOp = view->opIndex;
  const Space &space = env_.space();
  for (int guard = 0; view && !view->done && guard < 4096; ++guard) {
    if (view->opIndex - firstOp >= heuristicOps && !view->interchangePending) {
      out.push_back(space.make(space.noTransformation));
    } else {
      Actions finish = finishOp(out);
      if (finish.empty()) break;
      out.insert(out.end(), finish.begin(), finish.end());
    }
    view = env_.observe(out);
  }
  return out;
}

}  // namespace mlir_rl::cli
