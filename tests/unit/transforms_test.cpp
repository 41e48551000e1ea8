// Transforms: each fragment applies to the op family it targets, keeps the tag, and fails cleanly otherwise.
#include <gtest/gtest.h>

#include <functional>

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Parser/Parser.h"

#include "tests/unit/TestSupport.h"
#include "transforms/Transform.h"

namespace mlir_rl {
namespace {

using namespace transforms;

mlir::OwningOpRef<mlir::ModuleOp> fresh(const std::string &name) { return testing::benchmark(name)->module().clone(); }

int count(mlir::ModuleOp m, llvm::StringRef opName) {
  int n = 0;
  m.walk([&](mlir::Operation *op) { n += op->getName().getStringRef() == opName; });
  return n;
}

TEST(Transforms, HelperStatements) {
  EXPECT_EQ(transforms::largestPowerOfTwoDividing(1000, 16), 8);
  EXPECT_EQ(transforms::largestPowerOfTwoDividing(40, 16), 8);
  EXPECT_EQ(transforms::largestPowerOfTwoDividing(768, 16), 16);
  EXPECT_EQ(transforms::largestPowerOfTwoDividing(197, 16), 1);
  // Tiled, then the tiled op vectorized; nothing to tile: the op itself vectorized.
  std::string tiled = transforms::tileAndVectorizeStatements("h", {1, 16, 0}, "p", "t");
  EXPECT_NE(tiled.find("%p_t, %p_loops:2 = transform.structured.tile_using_for %h tile_sizes [1, 16, 0]"),
            std::string::npos)
      << tiled;
  EXPECT_NE(tiled.find("transform.structured.vectorize %p_t :"), std::string::npos) << tiled;
  EXPECT_EQ(transforms::tileAndVectorizeStatements("h", {0}, "p", "t"),
            "    transform.structured.vectorize %h : !transform.any_op\n");
}

TEST(Transforms, TilingKeepsTagAndShrinksLoops) {
  auto m = fresh("matmul_64x64x64_f32");
  ASSERT_EQ(testing::applyOrWhy(*m, {tilingFragment(0, {8, 16, 0}, "t")}), "");
  auto op = findTaggedOp(*m, 0);
  ASSERT_TRUE(op);
  EXPECT_EQ(op.getStaticLoopRanges(), (llvm::SmallVector<int64_t>{8, 16, 64}));
  EXPECT_EQ(count(*m, "scf.for"), 2);
}

// Parsed scripts are pooled and reused (TransformScript.cpp): applying one again, to another payload and after a
// failed application of another script, must do exactly what the freshly parsed script did.
TEST(Transforms, ReusedScriptsTransformLikeFreshOnes) {
  std::string first;
  for (int round = 0; round < 3; ++round) {
    auto failing = fresh("matmul_64x64x64_f32");
    ASSERT_NE(testing::applyOrWhy(*failing, {interchangeFragment(0, {1, 0}, "x")}), "");
    auto m = fresh("matmul_64x64x64_f32");
    ASSERT_EQ(testing::applyOrWhy(*m, {tilingFragment(0, {8, 16, 1}, "t")}), "");
    ASSERT_EQ(testing::applyOrWhy(*m, {vectorizationFragment(0, "v")}), "");
    EXPECT_EQ(count(*m, "scf.for"), 3);
    EXPECT_GT(count(*m, "vector.transfer_read"), 0);
    std::string ir;
    llvm::raw_string_ostream os(ir);
    m->print(os);
    if (round == 0) first = ir;
    EXPECT_EQ(ir, first) << "round " << round;
  }
}

TEST(Transforms, ParallelTilingPutsOnlyParallelLoopsInForall) {
  auto m = fresh("matmul_64x64x64_f32");
  auto frag = parallelTilingFragment(0, {16, 16, 8}, {false, false, true}, "p");
  ASSERT_EQ(testing::applyOrWhy(*m, {frag}), "");
  EXPECT_EQ(count(*m, "scf.forall"), 1);
  EXPECT_EQ(count(*m, "scf.for"), 1);  // the reduction loop
  auto op = findTaggedOp(*m, 0);
  ASSERT_TRUE(op);
  EXPECT_TRUE(isInsideForall(op));
  EXPECT_EQ(op.getStaticLoopRanges(), (llvm::SmallVector<int64_t>{16, 16, 8}));
}

TEST(Transforms, UnrolledCopiesInOneLoopBodyAreCounted) {
  auto m = fresh("matmul_64x64x64_f32");
  ASSERT_EQ(testing::applyOrWhy(*m, {tilingFragment(0, {8, 16, 4}, "t")}), "");
  EXPECT_EQ(maxCopiesPerLoopBody(findTaggedOps(*m, 0)), 1);
  EXPECT_EQ(unrollLoopNestBlocker(findTaggedOps(*m, 0)), std::nullopt);
  ASSERT_EQ(testing::applyOrWhy(*m, {unrollFragment(0, 4, "u")}), "");
  auto copies = findTaggedOps(*m, 0);
  ASSERT_EQ(copies.size(), 4u);
  EXPECT_EQ(maxCopiesPerLoopBody(copies), 4);
  EXPECT_EQ(maxCopiesPerLoopBody({copies[0]}), 1);
  EXPECT_NE(unrolledCopiesReason(4).find("exponential"), std::string::npos);
}

TEST(Transforms, UnrollRefusedWhenTheLoopHoldsOtherLoops) {
  const char *text = R"mlir(
    func.func @f(%A: tensor<8x8xf32>, %B: tensor<8x8xf32>) -> tensor<8x8xf32> {
      %c0 = arith.constant 0 : index
      %c1 = arith.constant 1 : index
      %c8 = arith.constant 8 : index
      %r = scf.for %i = %c0 to %c8 step %c1 iter_args(%t = %B) -> (tensor<8x8xf32>) {
        %inner = scf.for %j = %c0 to %c8 step %c1 iter_args(%u = %t) -> (tensor<8x8xf32>) {
          scf.yield %u : tensor<8x8xf32>
        }
        %s = linalg.add {rl.op = 0 : i64} ins(%A, %inner : tensor<8x8xf32>, tensor<8x8xf32>)
            outs(%inner : tensor<8x8xf32>) -> tensor<8x8xf32>
        scf.yield %s : tensor<8x8xf32>
      }
      return %r : tensor<8x8xf32>
    })mlir";
  auto m = mlir::parseSourceString<mlir::ModuleOp>(text, testing::context());
  ASSERT_TRUE(m);
  auto ops = findTaggedOps(*m, 0);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_NE(unrollLoopNestBlocker(ops).value_or("").find("other scf.for"), std::string::npos);
}

TEST(Transforms, InterchangeGeneralizesAndPermutes) {
  auto m = fresh("matmul_64x64x64_f32");
  ASSERT_EQ(testing::applyOrWhy(*m, {tilingFragment(0, {8, 16, 32}, "t")}), "");
  ASSERT_EQ(testing::applyOrWhy(*m, {interchangeFragment(0, {2, 0, 1}, "i")}), "");
  auto op = findTaggedOp(*m, 0);
  ASSERT_TRUE(op);
  EXPECT_TRUE(mlir::isa<mlir::linalg::GenericOp>(op.getOperation()));
  EXPECT_EQ(op.getStaticLoopRanges(), (llvm::SmallVector<int64_t>{32, 8, 16}));
}

TEST(Transforms, VectorizationBlockedUntilTiledSmall) {
  auto m = fresh("matmul_64x64x64_f32");
  EXPECT_TRUE(vectorizationBlocker(findTaggedOp(*m, 0), 512).has_value());
  ASSERT_EQ(testing::applyOrWhy(*m, {tilingFragment(0, {8, 16, 1}, "t")}), "");
  EXPECT_EQ(vectorizationBlocker(findTaggedOp(*m, 0), 512), std::nullopt);
  ASSERT_EQ(testing::applyOrWhy(*m, {vectorizationFragment(0, "v")}), "");
  EXPECT_FALSE(findTaggedOp(*m, 0));
  // The multiply-reduce becomes a vector.contract in the runner's lowering (vector cleanup), not in the step.
  EXPECT_EQ(count(*m, "vector.transfer_read"), 3);
  EXPECT_GE(count(*m, "vector.multi_reduction") + count(*m, "vector.contract"), 1);
}

// Session::apply builds each fragment once (value prefix "t", the transition-cache key) and renames its values for
// the schedule: the renamed text must be exactly what building with the schedule's prefix gives.
TEST(Transforms, RenamedFragmentsEqualFragmentsBuiltWithThePrefix) {
  auto conv = testing::benchmark("conv2d_nchw_1x128x30x30_128x128x3x3_s1_f32");  // read only
  std::vector<mlir::linalg::LinalgOp> convOps = findTaggedOps(conv->module(), 0);
  ASSERT_FALSE(convOps.empty());
  ASSERT_NE(vectorizationFragmentFor(convOps, 0, "t").text.find("decompose"), std::string::npos);  // the conv path
  FusionPlan plan;
  plan.paths = {{0}, {2}, {0, 1}};
  plan.producers = {"a", "b", "linalg.fill"};
  std::vector<std::function<Fragment(llvm::StringRef)>> builders = {
      [](llvm::StringRef p) {
        return tilingFragment(3, {8, 0, 4}, p);
      },
      [](llvm::StringRef p) {
        return parallelTilingFragment(3, {8, 4, 2}, {false, false, true}, p);
      },
      [](llvm::StringRef p) {
        return parallelTilingFragment(3, {0, 0, 2}, {false, false, true}, p);
      },
      [&](llvm::StringRef p) {
        return tiledFusionFragment(3, {8, 4, 2}, {false, false, true}, plan, p);
      },
      [](llvm::StringRef p) {
        return interchangeFragment(3, {2, 0, 1}, p);
      },
      [](llvm::StringRef p) { return img2colFragment(3, false, p); },
      [](llvm::StringRef p) { return img2colFragment(3, true, p); },
      [](llvm::StringRef p) { return unrollFragment(3, 4, p); },
      [](llvm::StringRef p) { return vectorizationFragment(3, p); },
      [&](llvm::StringRef p) { return vectorizationFragmentFor(convOps, 0, p); },
  };
  for (const auto &make : builders) {
    std::string key = make("t").text;
    EXPECT_EQ(renamePrefix({key}, "t", "s12").text, make("s12").text);
    EXPECT_EQ(renamePrefix({key}, "t", "t").text, key);
  }
}

TEST(Transforms, FailureReportsDiagnosticAndScriptIsReplayable) {
  auto m = fresh("matmul_64x64x64_f32");
  // Interchange with a permutation of the wrong length is rejected by MLIR with a message.
  std::string why = testing::applyOrWhy(*m, {interchangeFragment(0, {1, 0}, "i")});
  EXPECT_NE(why, "");
  EXPECT_NE(why, "failed without a diagnostic");
  std::string script = buildScript({tilingFragment(0, {8, 8, 8}, "a"), vectorizationFragment(0, "b")});
  EXPECT_NE(script.find("@__transform_main"), std::string::npos);
  EXPECT_NE(script.find("%a_op"), std::string::npos);
  EXPECT_NE(script.find("%b_op"), std::string::npos);
}

}  // namespace
}  // namespace mlir_rl
