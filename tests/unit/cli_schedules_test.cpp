// The search client's proposals (clients/cli/Schedules.h) on synthetic observations: register tiles shaped from loop
// bounds and masks, permutations, the action encoding, the JSON writer. No server: legality after a proposal is the
// server's to say, and the e2e tests (tests/e2e/test_search.py) check that part.
#include <algorithm>
#include <set>

#include <gtest/gtest.h>

#include "Json.h"
#include "Schedules.h"

using namespace mlir_rl::cli;

namespace {

constexpr int kLoops = 12;
const std::vector<int64_t> kSizes = {0, 1, 2, 4, 8, 16, 32, 64};

Space space() {
  mlir_rl::v1::MultiDiscreteSpace s;
  s.add_nvec(8);
  for (int i = 0; i < kLoops; ++i) s.add_nvec(static_cast<int64_t>(kSizes.size()));
  s.add_nvec(kLoops);
  for (const char *n : {"NO_TRANSFORMATION", "TILING", "TILED_PARALLELIZATION", "INTERCHANGE", "VECTORIZATION",
                        "TILED_FUSION", "IMG2COL", "UNROLL"})
    s.add_type_names(n);
  for (int64_t t : kSizes) s.add_tile_sizes(t);
  return Space(s);
}

// An untransformed op: every size that divides its bound (and is not above it) is legal, as the server's mask says.
View view(std::vector<int64_t> bounds, std::string iterators, std::string opName = "linalg.generic") {
  View v;
  v.numOps = 1;
  v.opName = std::move(opName);
  v.bounds = std::move(bounds);
  for (char c : iterators) v.iterators.push_back(c == 'r' ? 2 : 1);
  v.maskType.assign(8, 1);
  v.maskTiles.assign(kLoops, std::vector<uint8_t>(kSizes.size(), 0));
  for (int i = 0; i < kLoops; ++i) {
    v.maskTiles[i][0] = 1;
    for (size_t k = 1; k < kSizes.size(); ++k)
      if (i < v.numLoops() && kSizes[k] <= v.bounds[i] && v.bounds[i] % kSizes[k] == 0) v.maskTiles[i][k] = 1;
  }
  v.maskInterchange.assign(kLoops, 0);
  for (int i = 0; i < v.numLoops(); ++i) v.maskInterchange[i] = 1;
  return v;
}

}  // namespace

TEST(RegisterTiles, MatmulStartsWithEightRowsOfTwoVectors) {
  Space s = space();
  auto tiles = registerTiles(view({512, 512, 512}, "ppr", "linalg.matmul"), s, 16, 512);
  ASSERT_GE(tiles.size(), 3u);
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{8, 32, 1}));
  EXPECT_EQ(tiles[0].width, 32);
  EXPECT_EQ(tiles[1].sizes, (std::vector<int64_t>{4, 64, 1}));
  EXPECT_EQ(tiles[2].sizes, (std::vector<int64_t>{8, 16, 1}));  // then one vector
  // Where 32 does not divide the vector loop, no narrower "wide" tile: one-vector tiles come first.
  auto odd = registerTiles(view({197, 784, 768}, "ppr", "linalg.matmul"), s, 16, 512);
  ASSERT_FALSE(odd.empty());
  EXPECT_EQ(odd[0].sizes, (std::vector<int64_t>{1, 16, 1}));
  std::set<std::vector<int64_t>> distinct;
  for (const auto &t : tiles) {
    EXPECT_TRUE(distinct.insert(t.sizes).second) << "duplicate";
    int64_t elements = 1;
    for (size_t i = 0; i < t.sizes.size(); ++i) elements *= t.sizes[i] ? t.sizes[i] : 512;
    EXPECT_LE(elements, 512) << "beyond max_vector_elements";
  }
}

TEST(RegisterTiles, RowsComeFromLoopsTheVectorOperandDoesNotUse) {
  // A matmul_transpose_b after PACK: loops (m, n / 16, k, 16); A[m, k], B[n / 16, k, 16]. The vector runs along the
  // last loop, B is read along it: the rows go to m (each B vector serves 8 rows), not to more blocks of B.
  View v = view({128, 192, 768, 16}, "pprp");
  v.inputLoops = {0b0101, 0b1110};
  v.inputInnermostLoops = {0b0100, 0b1000};
  auto tiles = registerTiles(v, space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  // 8 rows of two vectors: the whole 16-wide loop (0) and two blocks of B make the 32 lanes.
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{8, 2, 1, 0}));
  EXPECT_EQ(tiles[0].width, 16);
  // 8 rows of one vector next, 16 rows of two blocks later.
  auto has = [&](std::vector<int64_t> sizes) {
    return std::any_of(tiles.begin(), tiles.end(), [&](const RegisterTile &t) { return t.sizes == sizes; });
  };
  EXPECT_TRUE(has({8, 1, 1, 0}));
  EXPECT_TRUE(has({16, 2, 1, 0}));
  // After SPLIT_REDUCTION (loops m, n, k / 16, 16; A[m, k / 16, 16], B[n, k / 16, 16]) both inputs are read along
  // the lanes: no blocks to span, 8 outputs share A's vector.
  View split = view({1, 1000, 32, 16}, "pprp");
  split.inputLoops = {0b1101, 0b1110};
  split.inputInnermostLoops = {0b1000, 0b1000};
  EXPECT_EQ(registerTiles(split, space(), 16, 512)[0].sizes, (std::vector<int64_t>{0, 8, 1, 0}));
  // A layer norm's variance after SPLIT_REDUCTION (m, k / 16, 16; X[m, k / 16, 16], mean[m]): the mean is not
  // broadcast across rows, so 8 rows, not 2 spanned ones.
  View variance = view({128, 48, 16}, "prp");
  variance.inputLoops = {0b111, 0b001};
  variance.inputInnermostLoops = {0b100, 0b001};
  EXPECT_EQ(registerTiles(variance, space(), 16, 512)[0].sizes, (std::vector<int64_t>{8, 1, 0}));
  // Without access information (servers before load_access), inner loops first as before.
  EXPECT_EQ(registerTiles(view({128, 192, 768, 16}, "pprp"), space(), 16, 512)[0].sizes,
            (std::vector<int64_t>{1, 8, 1, 0}));
  // A plain matmul is unchanged: m is the only other parallel loop.
  View mm = view({512, 512, 512}, "ppr", "linalg.matmul");
  mm.inputLoops = {0b101, 0b110};
  mm.inputInnermostLoops = {0b100, 0b010};
  EXPECT_EQ(registerTiles(mm, space(), 16, 512)[0].sizes, (std::vector<int64_t>{8, 32, 1}));
}

TEST(CacheSplit, APanelOfPackedBlocksOrABlockOfK) {
  // After PACK (loops m, n / 16, k, 16): [8, 2, 1, 0] is B's panel of two blocks first, then 8 rows within it.
  View v = view({128, 192, 768, 16}, "pprp");
  v.inputLoops = {0b0101, 0b1110};
  v.inputInnermostLoops = {0b0100, 0b1000};
  auto split = cacheSplit(v, {8, 2, 1, 0}, 4);
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->first, (std::vector<int64_t>{0, 2, 0, 0}));
  EXPECT_EQ(split->second, (std::vector<int64_t>{8, 0, 1, 0}));
  // Within the panel, the register tile keeps the two blocks whole: 8 rows of two vectors, no further panel.
  View panel = v;
  panel.bounds = {128, 2, 768, 16};
  auto tiles = registerTiles(panel, space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{8, 0, 1, 0}));
  EXPECT_FALSE(cacheSplit(panel, tiles[0].sizes, 4).has_value());
  // One block of B (size 1) is no panel.
  EXPECT_FALSE(cacheSplit(v, {8, 1, 1, 0}, 4).has_value());
  // A plain matmul whose B exceeds 1 MiB (768 x 768 f32): a block of 64 of k first, the register tile inside; none
  // at 512 x 512 f32 (1 MiB).
  View mm = view({128, 768, 768}, "ppr", "linalg.matmul");
  mm.inputLoops = {0b101, 0b110};
  mm.inputInnermostLoops = {0b100, 0b010};
  split = cacheSplit(mm, {8, 32, 1}, 4);
  ASSERT_TRUE(split.has_value());
  EXPECT_EQ(split->first, (std::vector<int64_t>{0, 0, 64}));
  EXPECT_EQ(split->second, (std::vector<int64_t>{8, 32, 1}));
  View blocked = mm;
  blocked.bounds = {128, 768, 64};  // within the block: nothing more
  EXPECT_FALSE(cacheSplit(blocked, {8, 32, 1}, 4).has_value());
  mm.bounds = {512, 512, 512};
  EXPECT_FALSE(cacheSplit(mm, {8, 32, 1}, 4).has_value());
  EXPECT_TRUE(cacheSplit(mm, {8, 32, 1}, 8).has_value());  // f64: 2 MiB
  // A batch_matmul tiled by 1 along the batch: each batch's B alone counts (16 x 64 x 384 f32: 96 KiB, no panel).
  View bmm = view({16, 384, 384, 64}, "pppr", "linalg.batch_matmul");
  bmm.inputLoops = {0b1011, 0b1101};
  bmm.inputInnermostLoops = {0b1000, 0b0100};
  EXPECT_FALSE(cacheSplit(bmm, {1, 8, 32, 1}, 4).has_value());
  // Convolutions: never (the filter is the vector operand).
  View conv = view({1, 56, 56, 256, 3, 3, 256},
                   "ppppr"
                   "rr",
                   "linalg.conv_2d_nhwc_hwcf");
  conv.inputLoops = {0b1110111, 0b1111000};
  conv.inputInnermostLoops = {0b1000000, 0b0001000};
  EXPECT_FALSE(cacheSplit(conv, {1, 1, 8, 32, 1, 1, 1}, 4).has_value());
}

TEST(PackedInputReuse, RowsThatShareThePackedInput) {
  // matmul_transpose_b (m, n, k): A[m, k], B[n, k] reads n strided; each B element serves m rows.
  View tb = view({128, 3072, 768}, "ppr");
  tb.inputLoops = {0b101, 0b110};
  tb.inputInnermostLoops = {0b100, 0b100};
  EXPECT_EQ(packedInputReuse(tb), 128);
  tb.bounds[0] = 1;  // a matrix-vector product: nothing to share the transposition
  EXPECT_EQ(packedInputReuse(tb), 1);
  // A plain matmul reads n contiguously: nothing to pack. No access information: 0.
  View mm = view({128, 128, 128}, "ppr");
  mm.inputLoops = {0b101, 0b110};
  mm.inputInnermostLoops = {0b100, 0b010};
  EXPECT_EQ(packedInputReuse(mm), 0);
  EXPECT_EQ(packedInputReuse(view({128, 128, 128}, "ppr")), 0);
}

TEST(RegisterTiles, F64UsesEightLanes) {
  auto tiles = registerTiles(view({256, 256, 256}, "ppr", "linalg.matmul"), space(), lanesFor("f64"), 512);
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{8, 16, 1}));  // two vectors of 8 f64
}

TEST(RegisterTiles, LoopsPowersOfTwoDoNotDivideStayWhole) {
  // relu 1x512x7x7: 7 only tiles by 1; the innermost 7 fits a vector whole, so it is the vector loop.
  auto tiles = registerTiles(view({1, 512, 7, 7}, "pppp"), space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  EXPECT_EQ(tiles[0].width, 7);
  EXPECT_EQ(tiles[0].sizes[3], 0);  // untiled: whole
  // Ops without reductions start with a single vector's worth of elements.
  int64_t elements = 1;
  for (int i = 0; i < 4; ++i)
    elements *= tiles[0].sizes[i] ? tiles[0].sizes[i] : view({1, 512, 7, 7}, "pppp").bounds[i];
  EXPECT_LE(elements, 16);
}

TEST(RegisterTiles, PrimeLoopsGiveOneElementVectorsTheHeuristicSkips) {
  // batch_matmul 12x197x64x197 (b, i, j, k) = (12, 197, 197, 64): the parallel 197s only tile by 1.
  auto tiles = registerTiles(view({12, 197, 197, 64}, "pppr", "linalg.batch_matmul"), space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  EXPECT_EQ(tiles[0].width, 1);
  bool wider = std::any_of(tiles.begin(), tiles.end(), [](const RegisterTile &t) { return t.width >= 2; });
  EXPECT_TRUE(wider) << "the reduction as the vector loop is among the proposals";
}

TEST(RegisterTiles, NhwcConvolutionVectorizesChannels) {
  // conv_2d_nhwc_hwcf 1x28x28x32 -> 192, 1x1: (n, oh, ow, f, kh, kw, c) = (1, 28, 28, 192, 1, 1, 32).
  View v = view({1, 28, 28, 192, 1, 1, 32},
                "ppppr"
                "rr",
                "linalg.conv_2d_nhwc_hwcf");
  auto tiles = registerTiles(v, space(), 16, 512);
  ASSERT_GE(tiles.size(), 2u);
  EXPECT_EQ(tiles[0].sizes[3], 16);  // output channels: the vector
  EXPECT_EQ(tiles[0].sizes[6], 8);   // input channels: half a vector of the reduction
  EXPECT_EQ(tiles[0].sizes[2], 4);   // 4 rows of the output's width
  EXPECT_EQ(tiles[0].sizes[1], 0);   // output height: vectorization tiles it to 1 itself
  EXPECT_EQ(tiles[1].sizes, (std::vector<int64_t>{0, 0, 2, 16, 0, 0, 16}));  // then a whole vector of channels
  // 3x3, 1x58x58x64 -> 64: the kernel's width by 1 (kept whole, the vector would leave room for 1 row only).
  View k3 = view({1, 56, 56, 64, 3, 3, 64}, "pppprrr", "linalg.conv_2d_nhwc_hwcf");
  EXPECT_EQ(registerTiles(k3, space(), 16, 512)[0].sizes, (std::vector<int64_t>{0, 0, 4, 16, 0, 1, 8}));
  // f64: 8 filters by 4 channels, 8 rows.
  EXPECT_EQ(registerTiles(k3, space(), 8, 512)[0].sizes, (std::vector<int64_t>{0, 0, 8, 8, 0, 1, 4}));
}

TEST(RegisterTiles, NchwConvolutionKeepsTheKernelWindowWhole) {
  // conv_2d_nchw_fchw (n, f, oh, ow, c, kh, kw) = (1, 64, 56, 56, 64, 3, 3).
  View v = view({1, 64, 56, 56, 64, 3, 3}, "pppprrr", "linalg.conv_2d_nchw_fchw");
  auto tiles = registerTiles(v, space(), 16, 512);
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{0, 4, 0, 8, 1, 0, 0}));
  EXPECT_EQ(tiles[0].width, 8);
}

TEST(RegisterTiles, NchwPoolingVectorizesChannelsFirst) {
  // pooling_nchw_max 3x3/2, 1x64x114x114 -> 1x64x56x56: (n, c, oh, ow, kh, kw) = (1, 64, 56, 56, 3, 3).
  View v = view({1, 64, 56, 56, 3, 3}, "pppprr", "linalg.pooling_nchw_max");
  auto tiles = registerTiles(v, space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{0, 8, 1, 2, 0, 0}));
  EXPECT_TRUE(tiles[0].channels);
  EXPECT_EQ(tiles[0].width, 8);
  // The width's vector is still among the proposals, after it.
  EXPECT_TRUE(std::any_of(tiles.begin() + 1, tiles.end(), [](const RegisterTile &t) { return !t.channels; }));
  // Offered to tiled fusion first too (the pool's fill fused into the tile).
  EXPECT_EQ(fusionTiles(v, space(), 16, 512).front(), (std::vector<int64_t>{0, 8, 1, 2, 0, 0}));
  // f64: 4 channels.
  EXPECT_EQ(poolingChannelTile(v, space(), 8)->sizes, (std::vector<int64_t>{0, 4, 1, 2, 0, 0}));
  // Global poolings (the output's width is 1), other ops and NHWC poolings: none.
  EXPECT_FALSE(poolingChannelTile(view({1, 512, 1, 1, 7, 7}, "pppprr", "linalg.pooling_nchw_sum"), space(), 16));
  EXPECT_FALSE(poolingChannelTile(view({1, 56, 56, 64, 3, 3}, "pppprr", "linalg.pooling_nhwc_max"), space(), 16));
  EXPECT_FALSE(poolingChannelTile(view({1, 64, 56, 56, 3, 3}, "pppprr"), space(), 16));
  // A width no size of 2 or less divides (odd, e.g. 7): no tile of two outputs; 1 is allowed.
  auto odd = poolingChannelTile(view({1, 512, 7, 7, 2, 2}, "pppprr", "linalg.pooling_nchw_max"), space(), 16);
  ASSERT_TRUE(odd);
  EXPECT_EQ(odd->sizes, (std::vector<int64_t>{0, 8, 1, 1, 0, 0}));
}

TEST(FusionTiles, RowsOfAnElementwiseOp) {
  // ReLU6 after a depthwise NCHW convolution, (n, c, h, w) = (1, 144, 56, 56): the register tile's parallel part,
  // then one channel's 8 rows, the width whole.
  auto tiles = fusionTiles(view({1, 144, 56, 56}, "pppp"), space(), 16, 512);
  ASSERT_GE(tiles.size(), 2u);
  EXPECT_EQ(tiles[1], (std::vector<int64_t>{0, 1, 8, 0}));
  // 14 rows: 2 of them (8 and 4 do not divide 14).
  EXPECT_EQ(fusionTiles(view({1, 576, 14, 14}, "pppp"), space(), 16, 512)[1], (std::vector<int64_t>{0, 1, 2, 0}));
  // Not for ops with reductions (a matmul's [1, 8] would be one row of m).
  for (const auto &t : fusionTiles(view({512, 512, 512}, "ppr"), space(), 16, 512))
    EXPECT_NE(t, (std::vector<int64_t>{1, 8, 0}));
}

TEST(RegisterTiles, NoRemainderWiderThanAVectorThatIsNotAMultipleOfIt) {
  // After IMG2COL of a 3x3 conv on 9x9 maps: (n, f, oh * ow, c * kh * kw) = (1, 512, 49, 4608). With PEELED_TILING's
  // masks (any size up to the bound), two vectors of 32 would leave a remainder of 17 columns.
  View v = view({1, 512, 49, 4608}, "pppr", "linalg.generic");
  for (auto &row : v.maskTiles)
    for (size_t k = 1; k < kSizes.size(); ++k) row[k] = 1;
  auto tiles = registerTiles(v, space(), 16, 512);
  ASSERT_FALSE(tiles.empty());
  for (const RegisterTile &t : tiles) EXPECT_NE(t.sizes[2], 32) << t.sizes[1];
  EXPECT_EQ(tiles[0].sizes, (std::vector<int64_t>{0, 8, 16, 1}));  // remainder 1
  // 197 by 32 leaves 5: allowed.
  View w = view({197, 768, 768}, "ppr", "linalg.matmul");
  for (auto &row : w.maskTiles)
    for (size_t k = 1; k < kSizes.size(); ++k) row[k] = 1;
  EXPECT_EQ(registerTiles(w, space(), 16, 512)[0].sizes, (std::vector<int64_t>{8, 32, 1}));
}

TEST(RegisterTiles, DepthwiseNhwcTakesFourRows) {
  // depthwise_conv_2d_nhwc_hwc (n, oh, ow, c, kh, kw): 3x3 on 56x56x144 and 5x5 on 28x28x240: 4 outputs of the
  // width by a vector of channels, inside 2 rows of the output's height.
  View k3 = view({1, 56, 56, 144, 3, 3}, "pppprr", "linalg.depthwise_conv_2d_nhwc_hwc");
  EXPECT_EQ(registerTiles(k3, space(), 16, 512)[0].sizes, (std::vector<int64_t>{0, 2, 4, 16, 0, 0}));
  View k5 = view({1, 28, 28, 240, 5, 5}, "pppprr", "linalg.depthwise_conv_2d_nhwc_hwc");
  EXPECT_EQ(registerTiles(k5, space(), 16, 512)[0].sizes, (std::vector<int64_t>{0, 2, 4, 16, 0, 0}));
  EXPECT_EQ(registerTiles(k3, space(), 8, 512)[0].sizes, (std::vector<int64_t>{0, 2, 4, 8, 0, 0}));  // f64
}

TEST(RegisterTiles, NhwcPoolingsAndDepthwiseTileTheOutputsHeight) {
  // Every proposal of a depthwise NHWC convolution or an NHWC pooling tiles the output's height, 2 where 2 divides
  // it, else 1 (37 rows).
  for (const char *name : {"linalg.depthwise_conv_2d_nhwc_hwc", "linalg.pooling_nhwc_sum"}) {
    for (int64_t rows : {56, 37}) {
      auto tiles = registerTiles(view({1, rows, rows, 128, 3, 3}, "pppprr", name), space(), 16, 512);
      ASSERT_FALSE(tiles.empty()) << name;
      for (const RegisterTile &t : tiles) EXPECT_EQ(t.sizes[1], rows % 2 == 0 ? 2 : 1) << name << " " << rows;
    }
  }
  // Not a convolution's: its vector of filters serves every row (conv 1x58x58x64 3x3: rows untiled 1.90 ms, 1 row
  // 3.18).
  auto conv = registerTiles(view({1, 56, 56, 64, 3, 3, 64}, "pppprrr", "linalg.conv_2d_nhwc_hwcf"), space(), 16, 512);
  ASSERT_FALSE(conv.empty());
  EXPECT_EQ(conv[0].sizes[1], 0);
}

TEST(DecomposedLoops, NamedConvolutionsAndPoolings) {
  EXPECT_EQ(decomposedLoops("linalg.conv_2d_nchw_fchw", 7), std::make_pair(2, 5));
  EXPECT_EQ(decomposedLoops("linalg.conv_2d_nhwc_hwcf", 7), std::make_pair(1, 4));
  EXPECT_EQ(decomposedLoops("linalg.pooling_nchw_max", 6), std::make_pair(2, 4));
  EXPECT_EQ(decomposedLoops("linalg.depthwise_conv_2d_nhwc_hwc", 6), std::make_pair(1, 4));
  EXPECT_EQ(decomposedLoops("linalg.matmul", 3), std::make_pair(-1, -1));
  EXPECT_EQ(decomposedLoops("linalg.conv_2d_nchw_fchw", 4), std::make_pair(-1, -1));  // not the named op's loops
}

TEST(CacheTiles, OnlyTilesThatShrinkSomething) {
  auto tiles = cacheTiles(view({512, 512, 512}, "ppr"), space());
  ASSERT_FALSE(tiles.empty());
  EXPECT_EQ(tiles[0], (std::vector<int64_t>{0, 0, 64}));
  EXPECT_TRUE(cacheTiles(view({8, 16, 1}, "ppr"), space()).empty());
}

TEST(Permutations, NotTheIdentityAndEachAPermutation) {
  View v = view({4, 8, 16, 32}, "pppr");
  auto perms = permutations(v, 6);
  ASSERT_EQ(perms.size(), 6u);
  for (const auto &p : perms) {
    std::vector<int> sorted = p;
    std::sort(sorted.begin(), sorted.end());
    EXPECT_EQ(sorted, (std::vector<int>{0, 1, 2, 3}));
    EXPECT_NE(p, (std::vector<int>{0, 1, 2, 3}));
  }
  EXPECT_EQ(perms[0], (std::vector<int>{0, 1, 3, 2}));  // the innermost parallel loop moved innermost
  Space s = space();
  Actions acts = interchangeActions(s, perms[0]);
  ASSERT_EQ(acts.size(), 3u);  // the last loop is implied
  EXPECT_EQ(acts[2].back(), 3);
  EXPECT_EQ(acts[0][0], s.interchange);
}

TEST(Space, EncodesAndDescribesActions) {
  Space s = space();
  Action t = s.tiles(s.tiling, {8, 16, 1});
  EXPECT_EQ(t[0], s.tiling);
  EXPECT_EQ(t[1], 4);
  EXPECT_EQ(t[2], 5);
  EXPECT_EQ(t[3], 1);
  EXPECT_EQ(s.brief(Actions{t, s.make(s.vectorization)}), "T[8,16,1] V");
  EXPECT_EQ(s.brief(Actions{}), "(untransformed)");
  EXPECT_EQ(s.brief(s.unrollBy(4)), "U4");
  EXPECT_EQ(s.brief(s.pointer(2)), "I2");
  EXPECT_THROW(s.tiles(s.tiling, {3}), std::invalid_argument);
}

TEST(RandomAction, OnlyUnmaskedValues) {
  Space s = space();
  View v = view({12, 7}, "pr");
  v.maskType = {1, 1, 0, 0, 0, 0, 0, 0};
  std::mt19937_64 rng(1);
  for (int i = 0; i < 200; ++i) {
    Action a = randomAction(v, s, rng);
    EXPECT_TRUE(a[0] == 0 || a[0] == 1);
    EXPECT_TRUE(v.maskTiles[0][a[1]]);
    EXPECT_TRUE(v.maskTiles[1][a[2]]);
    EXPECT_TRUE(v.maskInterchange[a.back()]);
  }
}

TEST(JsonWriter, NestsAndEscapes) {
  JsonWriter j;
  j.beginObject();
  j.key("a\"b").value("x\ny");
  j.key("list").beginArray(true).value(1).value(2.5).endArray();
  j.key("none").null();
  j.key("nan").value(std::nan(""));
  j.endObject();
  EXPECT_EQ(j.str(), "{\n  \"a\\\"b\": \"x\\ny\",\n  \"list\": [1, 2.5],\n  \"none\": null,\n  \"nan\": null\n}");
}
