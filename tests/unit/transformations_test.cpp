// The transformations of issue 3 — TILED_FUSION, IMG2COL, UNROLL, convolution VECTORIZATION, swap INTERCHANGE —
// on every op family they apply to (matmul, batch_matmul, conv 2-D NHWC and NCHW, depthwise conv, pooling,
// elementwise, generic contraction). Every test drives a Session, checks the result against the untransformed
// reference through EvaluationService::evaluate (ok and correct), and checks that the exported schedule, replayed by
// mlir-opt on the tagged benchmark, reproduces the session's IR. The modules are written here, small enough to
// evaluate quickly.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include <unistd.h>

#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/SCF/IR/SCF.h"
#include "mlir/Parser/Parser.h"

#include "env/Session.h"
#include "tests/unit/TestSupport.h"
#include "transforms/Transform.h"

namespace mlir_rl {
namespace {

using env::ActionType;
using env::Session;
using env::SessionConfig;
using testing::act;

// ---- modules ---------------------------------------------------------------------------------------------------
// Tags follow program order (linalg.fill is not tagged); the schedule visits the last op first.

// tag 0: matmul_transpose_b (m, n, k) = (24, 64, 40), B stored [n, k]; tag 1: relu of it.
const char *kMatmulTransposeB = R"mlir(
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @matmul_tb(%A: tensor<24x40xf32>, %B: tensor<64x40xf32>) -> tensor<24x64xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<24x64xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<24x64xf32>) -> tensor<24x64xf32>
  %m = linalg.matmul_transpose_b ins(%A, %B : tensor<24x40xf32>, tensor<64x40xf32>) outs(%f : tensor<24x64xf32>) -> tensor<24x64xf32>
  %e2 = tensor.empty() : tensor<24x64xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m : tensor<24x64xf32>) outs(%e2 : tensor<24x64xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<24x64xf32>
  return %r : tensor<24x64xf32>
})mlir";

// tag 0: batch_matmul_transpose_b in f64 (b, m, n, k) = (2, 8, 24, 16): n = 24 packs by 8 (one 64-byte vector).
const char *kBatchMatmulTransposeBF64 = R"mlir(
func.func @bmm_tb(%A: tensor<2x8x16xf64>, %B: tensor<2x24x16xf64>) -> tensor<2x8x24xf64> {
  %zero = arith.constant 0.0 : f64
  %e = tensor.empty() : tensor<2x8x24xf64>
  %f = linalg.fill ins(%zero : f64) outs(%e : tensor<2x8x24xf64>) -> tensor<2x8x24xf64>
  %r = linalg.batch_matmul_transpose_b ins(%A, %B : tensor<2x8x16xf64>, tensor<2x24x16xf64>) outs(%f : tensor<2x8x24xf64>) -> tensor<2x8x24xf64>
  return %r : tensor<2x8x24xf64>
})mlir";

// tag 0: add (32x64), tag 1: matmul (i, j, k) = (32, 48, 64) reading the add.
const char *kMatmul = R"mlir(
func.func @matmul(%A: tensor<32x64xf32>, %X: tensor<32x64xf32>, %B: tensor<64x48xf32>) -> tensor<32x48xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<32x64xf32>
  %a = linalg.add ins(%A, %X : tensor<32x64xf32>, tensor<32x64xf32>) outs(%e0 : tensor<32x64xf32>) -> tensor<32x64xf32>
  %e = tensor.empty() : tensor<32x48xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<32x48xf32>) -> tensor<32x48xf32>
  %r = linalg.matmul ins(%a, %B : tensor<32x64xf32>, tensor<64x48xf32>) outs(%f : tensor<32x48xf32>) -> tensor<32x48xf32>
  return %r : tensor<32x48xf32>
})mlir";

// tag 0: matmul (i, j, k) = (24, 100, 40): 16, 32 and 64 do not divide 100, 16 does not divide 40.
const char *kMatmulOdd = R"mlir(
func.func @matmul_odd(%A: tensor<24x40xf32>, %B: tensor<40x100xf32>) -> tensor<24x100xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<24x100xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<24x100xf32>) -> tensor<24x100xf32>
  %r = linalg.matmul ins(%A, %B : tensor<24x40xf32>, tensor<40x100xf32>) outs(%f : tensor<24x100xf32>) -> tensor<24x100xf32>
  return %r : tensor<24x100xf32>
})mlir";

// tag 0: matmul (i, j, k) = (32, 32, 64), tag 1: relu of it.
const char *kMatmulRelu = R"mlir(
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @matmul_relu(%A: tensor<32x64xf32>, %B: tensor<64x32xf32>) -> tensor<32x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<32x32xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<32x32xf32>) -> tensor<32x32xf32>
  %m = linalg.matmul ins(%A, %B : tensor<32x64xf32>, tensor<64x32xf32>) outs(%f : tensor<32x32xf32>) -> tensor<32x32xf32>
  %e2 = tensor.empty() : tensor<32x32xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m : tensor<32x32xf32>) outs(%e2 : tensor<32x32xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<32x32xf32>
  return %r : tensor<32x32xf32>
})mlir";

// tag 0: matmul (32, 32, 64), tag 1: + bias[j] (broadcast), tag 2: + residual, tag 3: relu — a layer's epilogue.
const char *kMatmulEpilogue = R"mlir(
#id = affine_map<(d0, d1) -> (d0, d1)>
#col = affine_map<(d0, d1) -> (d1)>
func.func @matmul_epilogue(%A: tensor<32x64xf32>, %B: tensor<64x32xf32>, %bias: tensor<32xf32>, %R: tensor<32x32xf32>) -> tensor<32x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<32x32xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<32x32xf32>) -> tensor<32x32xf32>
  %m = linalg.matmul ins(%A, %B : tensor<32x64xf32>, tensor<64x32xf32>) outs(%f : tensor<32x32xf32>) -> tensor<32x32xf32>
  %e1 = tensor.empty() : tensor<32x32xf32>
  %b = linalg.generic {indexing_maps = [#id, #col, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m, %bias : tensor<32x32xf32>, tensor<32xf32>) outs(%e1 : tensor<32x32xf32>) {
  ^bb0(%x: f32, %c: f32, %o: f32):
    %y = arith.addf %x, %c : f32
    linalg.yield %y : f32
  } -> tensor<32x32xf32>
  %e2 = tensor.empty() : tensor<32x32xf32>
  %s = linalg.add ins(%b, %R : tensor<32x32xf32>, tensor<32x32xf32>) outs(%e2 : tensor<32x32xf32>) -> tensor<32x32xf32>
  %e3 = tensor.empty() : tensor<32x32xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%s : tensor<32x32xf32>) outs(%e3 : tensor<32x32xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<32x32xf32>
  return %r : tensor<32x32xf32>
})mlir";

// tag 0: mul (4x16x32), tag 1: batch_matmul (b, i, j, k) = (4, 16, 32, 32).
const char *kBatchMatmul = R"mlir(
func.func @batch_matmul(%A: tensor<4x16x32xf32>, %S: tensor<4x16x32xf32>, %B: tensor<4x32x32xf32>) -> tensor<4x16x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<4x16x32xf32>
  %a = linalg.mul ins(%A, %S : tensor<4x16x32xf32>, tensor<4x16x32xf32>) outs(%e0 : tensor<4x16x32xf32>) -> tensor<4x16x32xf32>
  %e = tensor.empty() : tensor<4x16x32xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4x16x32xf32>) -> tensor<4x16x32xf32>
  %r = linalg.batch_matmul ins(%a, %B : tensor<4x16x32xf32>, tensor<4x32x32xf32>) outs(%f : tensor<4x16x32xf32>) -> tensor<4x16x32xf32>
  return %r : tensor<4x16x32xf32>
})mlir";

// tag 0: relu of the input, tag 1: conv_2d_nhwc_hwcf, loops (n, oh, ow, f, kh, kw, c) = (1, 16, 16, 16, 3, 3, 8).
const char *kConvNhwc = R"mlir(
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @conv_nhwc(%I: tensor<1x18x18x8xf32>, %F: tensor<3x3x8x16xf32>) -> tensor<1x16x16x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<1x18x18x8xf32>
  %x = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
      ins(%I : tensor<1x18x18x8xf32>) outs(%e0 : tensor<1x18x18x8xf32>) {
  ^bb0(%v: f32, %o: f32):
    %y = arith.maximumf %v, %zero : f32
    linalg.yield %y : f32
  } -> tensor<1x18x18x8xf32>
  %e = tensor.empty() : tensor<1x16x16x16xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %r = linalg.conv_2d_nhwc_hwcf {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
      ins(%x, %F : tensor<1x18x18x8xf32>, tensor<3x3x8x16xf32>) outs(%f : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  return %r : tensor<1x16x16x16xf32>
})mlir";

// tag 0: conv_2d_nhwc_hwcf with strides 2, loops (1, 8, 8, 16, 3, 3, 8).
const char *kConvNhwcStrided = R"mlir(
func.func @conv_nhwc_s2(%I: tensor<1x17x17x8xf32>, %F: tensor<3x3x8x16xf32>) -> tensor<1x8x8x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1x8x8x16xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
  %r = linalg.conv_2d_nhwc_hwcf {dilations = dense<1> : tensor<2xi64>, strides = dense<2> : tensor<2xi64>}
      ins(%I, %F : tensor<1x17x17x8xf32>, tensor<3x3x8x16xf32>) outs(%f : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
  return %r : tensor<1x8x8x16xf32>
})mlir";

// tag 0: relu, tag 1: conv_2d_nchw_fchw, loops (n, f, oh, ow, c, kh, kw) = (1, 16, 16, 16, 8, 3, 3).
const char *kConvNchw = R"mlir(
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @conv_nchw(%I: tensor<1x8x18x18xf32>, %F: tensor<16x8x3x3xf32>) -> tensor<1x16x16x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<1x8x18x18xf32>
  %x = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
      ins(%I : tensor<1x8x18x18xf32>) outs(%e0 : tensor<1x8x18x18xf32>) {
  ^bb0(%v: f32, %o: f32):
    %y = arith.maximumf %v, %zero : f32
    linalg.yield %y : f32
  } -> tensor<1x8x18x18xf32>
  %e = tensor.empty() : tensor<1x16x16x16xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %r = linalg.conv_2d_nchw_fchw {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
      ins(%x, %F : tensor<1x8x18x18xf32>, tensor<16x8x3x3xf32>) outs(%f : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  return %r : tensor<1x16x16x16xf32>
})mlir";

// tag 0: conv_2d_nhwc_fhwc (img2col only; decompose does not support it), loops (1, 8, 8, 16, 3, 3, 8).
const char *kConvFhwc = R"mlir(
func.func @conv_fhwc(%I: tensor<1x10x10x8xf32>, %F: tensor<16x3x3x8xf32>) -> tensor<1x8x8x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e = tensor.empty() : tensor<1x8x8x16xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
  %r = linalg.conv_2d_nhwc_fhwc {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
      ins(%I, %F : tensor<1x10x10x8xf32>, tensor<16x3x3x8xf32>) outs(%f : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
  return %r : tensor<1x8x8x16xf32>
})mlir";

// tag 0: relu, tag 1: depthwise_conv_2d_nhwc_hwc, loops (n, oh, ow, c, kh, kw) = (1, 16, 16, 16, 3, 3).
const char *kDepthwise = R"mlir(
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @depthwise(%I: tensor<1x18x18x16xf32>, %F: tensor<3x3x16xf32>) -> tensor<1x16x16x16xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<1x18x18x16xf32>
  %x = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
      ins(%I : tensor<1x18x18x16xf32>) outs(%e0 : tensor<1x18x18x16xf32>) {
  ^bb0(%v: f32, %o: f32):
    %y = arith.maximumf %v, %zero : f32
    linalg.yield %y : f32
  } -> tensor<1x18x18x16xf32>
  %e = tensor.empty() : tensor<1x16x16x16xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %r = linalg.depthwise_conv_2d_nhwc_hwc {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
      ins(%x, %F : tensor<1x18x18x16xf32>, tensor<3x3x16xf32>) outs(%f : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  return %r : tensor<1x16x16x16xf32>
})mlir";

// tag 0: relu, tag 1: pooling_nchw_max, loops (n, c, oh, ow, kh, kw) = (1, 16, 16, 16, 3, 3).
const char *kPoolNchwMax = R"mlir(
#id = affine_map<(d0, d1, d2, d3) -> (d0, d1, d2, d3)>
func.func @pool_nchw_max(%I: tensor<1x16x18x18xf32>) -> tensor<1x16x16x16xf32> {
  %zero = arith.constant 0.0 : f32
  %lowest = arith.constant -3.40282347E+38 : f32
  %e0 = tensor.empty() : tensor<1x16x18x18xf32>
  %x = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel", "parallel", "parallel"]}
      ins(%I : tensor<1x16x18x18xf32>) outs(%e0 : tensor<1x16x18x18xf32>) {
  ^bb0(%v: f32, %o: f32):
    %y = arith.maximumf %v, %zero : f32
    linalg.yield %y : f32
  } -> tensor<1x16x18x18xf32>
  %w = tensor.empty() : tensor<3x3xf32>
  %e = tensor.empty() : tensor<1x16x16x16xf32>
  %f = linalg.fill ins(%lowest : f32) outs(%e : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  %r = linalg.pooling_nchw_max {dilations = dense<1> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
      ins(%x, %w : tensor<1x16x18x18xf32>, tensor<3x3xf32>) outs(%f : tensor<1x16x16x16xf32>) -> tensor<1x16x16x16xf32>
  return %r : tensor<1x16x16x16xf32>
})mlir";

// Pooling variants (tag 0 each): nhwc sum (strides 2), nchw sum, nhwc max, nhwc min; loops of the NHWC forms
// (n, oh, ow, c, kh, kw) = (1, 8, 8, 16, 2, 2), of the NCHW form (n, c, oh, ow, kh, kw) = (1, 16, 8, 8, 2, 2).
std::string pooling(const std::string &op, bool nchw, bool strided, const std::string &init) {
  std::string in = nchw ? (strided ? "1x16x16x16" : "1x16x9x9") : (strided ? "1x16x16x16" : "1x9x9x16");
  std::string out = nchw ? "1x16x8x8" : "1x8x8x16";
  std::string stride = strided ? "2" : "1";
  return "func.func @pool(%I: tensor<" + in + "xf32>) -> tensor<" + out +
         "xf32> {\n"
         "  %init = arith.constant " +
         init +
         " : f32\n"
         "  %w = tensor.empty() : tensor<2x2xf32>\n"
         "  %e = tensor.empty() : tensor<" +
         out +
         "xf32>\n"
         "  %f = linalg.fill ins(%init : f32) outs(%e : tensor<" +
         out + "xf32>) -> tensor<" + out +
         "xf32>\n"
         "  %r = linalg." +
         op + " {dilations = dense<1> : tensor<2xi64>, strides = dense<" + stride +
         "> : tensor<2xi64>} ins(%I, %w : tensor<" + in + "xf32>, tensor<2x2xf32>) outs(%f : tensor<" + out +
         "xf32>) -> tensor<" + out +
         "xf32>\n"
         "  return %r : tensor<" +
         out + "xf32>\n}\n";
}

// tag 0: add, tag 1: relu of it; 64x128.
const char *kElementwise = R"mlir(
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @add_relu(%X: tensor<64x128xf32>, %Y: tensor<64x128xf32>) -> tensor<64x128xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<64x128xf32>
  %s = linalg.add ins(%X, %Y : tensor<64x128xf32>, tensor<64x128xf32>) outs(%e0 : tensor<64x128xf32>) -> tensor<64x128xf32>
  %e = tensor.empty() : tensor<64x128xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%s : tensor<64x128xf32>) outs(%e : tensor<64x128xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<64x128xf32>
  return %r : tensor<64x128xf32>
})mlir";

// tag 0: scale of A, tag 1: C[i, j] = sum_{k, l} A[i, k, l] * B[k, l, j]; loops (i, j, k, l) = (16, 32, 8, 4).
const char *kContraction = R"mlir(
#a = affine_map<(i, j, k, l) -> (i, k, l)>
#b = affine_map<(i, j, k, l) -> (k, l, j)>
#c = affine_map<(i, j, k, l) -> (i, j)>
#id3 = affine_map<(d0, d1, d2) -> (d0, d1, d2)>
func.func @contraction(%A: tensor<16x8x4xf32>, %B: tensor<8x4x32xf32>) -> tensor<16x32xf32> {
  %zero = arith.constant 0.0 : f32
  %half = arith.constant 0.5 : f32
  %e0 = tensor.empty() : tensor<16x8x4xf32>
  %s = linalg.generic {indexing_maps = [#id3, #id3], iterator_types = ["parallel", "parallel", "parallel"]}
      ins(%A : tensor<16x8x4xf32>) outs(%e0 : tensor<16x8x4xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.mulf %x, %half : f32
    linalg.yield %y : f32
  } -> tensor<16x8x4xf32>
  %e = tensor.empty() : tensor<16x32xf32>
  %f = linalg.fill ins(%zero : f32) outs(%e : tensor<16x32xf32>) -> tensor<16x32xf32>
  %r = linalg.generic {indexing_maps = [#a, #b, #c], iterator_types = ["parallel", "parallel", "reduction", "reduction"]}
      ins(%s, %B : tensor<16x8x4xf32>, tensor<8x4x32xf32>) outs(%f : tensor<16x32xf32>) {
  ^bb0(%x: f32, %y: f32, %acc: f32):
    %p = arith.mulf %x, %y : f32
    %q = arith.addf %acc, %p : f32
    linalg.yield %q : f32
  } -> tensor<16x32xf32>
  return %r : tensor<16x32xf32>
})mlir";

// ---- helpers ---------------------------------------------------------------------------------------------------

std::shared_ptr<const env::Benchmark> inlineBenchmark(const std::string &name, const std::string &text) {
  // Never destroyed: the benchmarks' modules must not outlive the shared MLIRContext at exit.
  static auto &cache = *new std::map<std::string, std::shared_ptr<const env::Benchmark>>();
  auto it = cache.find(name);
  if (it != cache.end()) return it->second;
  auto b = env::Benchmark::parse(testing::context(), "benchmark://unit-transformations/" + name, text);
  EXPECT_TRUE(b.ok()) << b.status();
  if (!b.ok()) return nullptr;
  cache[name] = *b;
  return *b;
}

std::unique_ptr<Session> start(const std::string &name, const std::string &text, SessionConfig config = {}) {
  auto b = inlineBenchmark(name, text);
  if (!b) return nullptr;
  auto s = Session::create(b, config, 0, &testing::evaluator());
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? std::move(*s) : nullptr;
}

// Steps and requires the action to be legal and applied.
bool applyOk(Session &s, const std::vector<int64_t> &action) {
  auto r = s.step(action);
  if (!r.ok()) {
    ADD_FAILURE() << "step rejected: " << r.status();
    return false;
  }
  if (!r->applied) {
    ADD_FAILURE() << r->description << " failed: " << r->failureReason;
    return false;
  }
  return true;
}

bool typeLegal(const Session &s, ActionType t) { return s.mask().type[static_cast<int>(t)]; }
std::string typeReason(const Session &s, ActionType t) { return s.mask().typeReasons[static_cast<int>(t)]; }

mlir::OwningOpRef<mlir::ModuleOp> currentModule(const Session &s) {
  return mlir::parseSourceString<mlir::ModuleOp>(s.currentIR(), testing::context());
}

int count(mlir::ModuleOp m, llvm::StringRef opName) {
  int n = 0;
  m.walk([&](mlir::Operation *op) { n += op->getName().getStringRef() == opName; });
  return n;
}

// The session's current IR computes the reference's result.
void expectCorrect(const Session &s) {
  auto module = currentModule(s);
  ASSERT_TRUE(module);
  env::EvaluationRecord e = testing::evaluator().evaluate(s.benchmark(), *module, 0, 1);
  EXPECT_TRUE(e.ok) << e.failure;
  EXPECT_TRUE(e.correct) << "max abs error " << e.maxAbsError;
}

// Runs /usr/lib/llvm-19/bin/mlir-opt with `args` on `input`; returns stdout, or "" with a test failure.
std::string mlirOpt(const std::string &input, const std::string &args) {
  static int counter = 0;
  std::filesystem::path dir = std::filesystem::temp_directory_path() /
                              ("mlir_rl_transformations_" + std::to_string(getpid()) + "_" + std::to_string(counter++));
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "input.mlir") << input;
  std::string command =
      "/usr/lib/llvm-19/bin/mlir-opt " + args + " " + (dir / "input.mlir").string() + " 2>" + (dir / "stderr").string();
  std::string out;
  FILE *pipe = popen(command.c_str(), "r");
  if (!pipe) {
    ADD_FAILURE() << "cannot run " << command;
    return "";
  }
  std::array<char, 4096> buffer;
  size_t n;
  while ((n = fread(buffer.data(), 1, buffer.size(), pipe)) > 0) out.append(buffer.data(), n);
  int status = pclose(pipe);
  if (status != 0) {
    std::stringstream err;
    err << std::ifstream(dir / "stderr").rdbuf();
    ADD_FAILURE() << command << " failed: " << err.str();
    out.clear();
  }
  std::filesystem::remove_all(dir);
  return out;
}

// The exported schedule, applied by mlir-opt to the tagged benchmark, gives the session's IR (both printed by
// mlir-opt, so SSA names and attribute aliases are normalized the same way).
void expectReplayMatches(const Session &s) {
  std::filesystem::path script =
      std::filesystem::temp_directory_path() / ("mlir_rl_schedule_" + std::to_string(getpid()) + ".mlir");
  std::ofstream(script) << s.schedule();
  std::string replayed =
      mlirOpt(s.benchmark().taggedText(),
              "--transform-preload-library=transform-library-paths=" + script.string() + " --transform-interpreter");
  std::filesystem::remove(script);
  ASSERT_FALSE(replayed.empty());
  std::string a = mlirOpt(replayed, ""), b = mlirOpt(s.currentIR(), "");
  ASSERT_FALSE(b.empty());
  EXPECT_EQ(a, b) << "schedule:\n" << s.schedule();
}

void expectCorrectAndReplayable(const Session &s) {
  expectCorrect(s);
  expectReplayMatches(s);
}

// ---- TILED_FUSION ------------------------------------------------------------------------------------------------

TEST(TiledFusion, MatmulFusesInputProducerAndFillThenTheProducerIsStillScheduled) {
  auto s = start("matmul", kMatmul);
  ASSERT_TRUE(s);
  ASSERT_TRUE(typeLegal(*s, ActionType::TiledFusion)) << typeReason(*s, ActionType::TiledFusion);
  // parallel (i, j) -> forall 8x16; reduction k tiled by 16 with scf.for after fusion.
  auto r = s->step(act(*s, ActionType::TiledFusion, {8, 16, 16}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("fusing linalg.add, linalg.fill"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  EXPECT_EQ(count(*m, "scf.forall"), 1);
  EXPECT_EQ(count(*m, "linalg.add"), 1);   // the original was dead and is gone
  EXPECT_EQ(count(*m, "linalg.fill"), 1);  // fused: a tile-sized fill inside the forall
  auto add = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(add.size(), 1u);
  EXPECT_TRUE(transforms::isInsideForall(add[0]));
  EXPECT_EQ(add[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{8, 64}));
  m->walk([&](mlir::linalg::FillOp fill) { EXPECT_TRUE(transforms::isInsideForall(fill)); });
  expectCorrectAndReplayable(*s);
  // The producer (now the fused copy) is still the schedule's next op and can be transformed.
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::NoTransformation)));
  EXPECT_EQ(s->status().currentOp, "linalg.add");
  EXPECT_FALSE(typeLegal(*s, ActionType::TiledParallelization));  // nested parallelism is refused
  EXPECT_FALSE(typeLegal(*s, ActionType::TiledFusion));
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {4, 16})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  EXPECT_TRUE(s->status().terminated);
  expectCorrectAndReplayable(*s);
}

TEST(TiledFusion, ConsumerFusesMatmulWithItsFillAndTheFusedMatmulIsTransformedLater) {
  auto s = start("matmul_relu", kMatmulRelu);
  ASSERT_TRUE(s);
  auto r = s->step(act(*s, ActionType::TiledFusion, {8, 16}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("fusing linalg.matmul, linalg.fill"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  auto matmul = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(matmul.size(), 1u);
  EXPECT_TRUE(transforms::isInsideForall(matmul[0]));
  EXPECT_EQ(matmul[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{8, 16, 64}));
  int fillsInForall = 0;
  m->walk([&](mlir::linalg::FillOp f) { fillsInForall += transforms::isInsideForall(f); });
  EXPECT_EQ(fillsInForall, 1);
  expectCorrectAndReplayable(*s);
  // The matmul (fused copy): tile its reduction, unroll that loop, vectorize all copies.
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::NoTransformation)));
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 0, 1})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Unroll)) << typeReason(*s, ActionType::Unroll);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Unroll, {}, 0, 4)));
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  expectCorrectAndReplayable(*s);
}

struct FusionCase {
  const char *name;
  std::string text;
  std::vector<int64_t> sizes;
  const char *fused;  // expected in the description
};

// The epilogue of a layer (bias, residual, ReLU) and the matmul that feeds it fuse into one forall from the last op:
// producers are followed through ops without reductions, and of the matmul only its fill.
TEST(TiledFusion, AnEpilogueChainFusesWithItsContraction) {
  auto s = start("matmul_epilogue", kMatmulEpilogue);
  ASSERT_TRUE(s);
  ASSERT_TRUE(typeLegal(*s, ActionType::TiledFusion)) << typeReason(*s, ActionType::TiledFusion);
  auto r = s->step(act(*s, ActionType::TiledFusion, {8, 16}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("fusing linalg.add, linalg.generic, linalg.matmul, linalg.fill"), std::string::npos)
      << r->description;
  auto m = currentModule(*s);
  EXPECT_EQ(count(*m, "scf.forall"), 1);
  EXPECT_EQ(count(*m, "linalg.matmul"), 1);  // the full-size original is gone
  m->walk([&](mlir::linalg::LinalgOp op) {
    EXPECT_TRUE(transforms::isInsideForall(op)) << op->getName().getStringRef().str();
  });
  auto mm = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(mm.size(), 1u);
  EXPECT_EQ(mm[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{8, 16, 64}));
  expectCorrectAndReplayable(*s);
  // Every op of the chain is still scheduled, inside the forall, and vectorizes there.
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));                                 // relu
  for (int op = 0; op < 2; ++op) ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));  // add, bias
  EXPECT_EQ(s->status().currentOp, "linalg.matmul");
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 0, 1})));
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  EXPECT_TRUE(s->status().terminated);
  expectCorrectAndReplayable(*s);
}

const char *kTwoMatmulsRelu = R"mlir(
#id = affine_map<(d0, d1) -> (d0, d1)>
func.func @two_matmuls_relu(%A: tensor<32x64xf32>, %B: tensor<64x64xf32>, %C: tensor<64x32xf32>) -> tensor<32x32xf32> {
  %zero = arith.constant 0.0 : f32
  %e0 = tensor.empty() : tensor<32x64xf32>
  %f0 = linalg.fill ins(%zero : f32) outs(%e0 : tensor<32x64xf32>) -> tensor<32x64xf32>
  %m1 = linalg.matmul ins(%A, %B : tensor<32x64xf32>, tensor<64x64xf32>) outs(%f0 : tensor<32x64xf32>) -> tensor<32x64xf32>
  %e1 = tensor.empty() : tensor<32x32xf32>
  %f1 = linalg.fill ins(%zero : f32) outs(%e1 : tensor<32x32xf32>) -> tensor<32x32xf32>
  %m2 = linalg.matmul ins(%m1, %C : tensor<32x64xf32>, tensor<64x32xf32>) outs(%f1 : tensor<32x32xf32>) -> tensor<32x32xf32>
  %e2 = tensor.empty() : tensor<32x32xf32>
  %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
      ins(%m2 : tensor<32x32xf32>) outs(%e2 : tensor<32x32xf32>) {
  ^bb0(%x: f32, %o: f32):
    %y = arith.maximumf %x, %zero : f32
    linalg.yield %y : f32
  } -> tensor<32x32xf32>
  return %r : tensor<32x32xf32>
})mlir";

// A producer with reduction loops ends the chain (only its fill joins): the previous layer is not recomputed per tile.
TEST(TiledFusion, AProducerWithReductionsStopsTheChain) {
  auto s = start("two_matmuls_relu", kTwoMatmulsRelu);
  ASSERT_TRUE(s);
  auto r = s->step(act(*s, ActionType::TiledFusion, {8, 16}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("fusing linalg.matmul, linalg.fill"), std::string::npos) << r->description;
  EXPECT_EQ(r->description.find("linalg.matmul, linalg.fill, linalg.matmul"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  int outside = 0;
  m->walk([&](mlir::linalg::MatmulOp op) { outside += !transforms::isInsideForall(op); });
  EXPECT_EQ(outside, 1);  // the first matmul
  expectCorrectAndReplayable(*s);
}

TEST(TiledFusion, EveryFamilyComputesTheReference) {
  std::vector<FusionCase> cases = {
      {"batch_matmul", kBatchMatmul, {2, 8, 16, 8}, "fusing linalg.mul, linalg.fill"},
      {"conv_nhwc", kConvNhwc, {0, 4, 8, 8, 0, 0, 4}, "fusing linalg.generic, linalg.fill"},
      {"conv_nchw", kConvNchw, {0, 8, 4, 8, 4, 0, 0}, "fusing linalg.generic, linalg.fill"},
      {"depthwise", kDepthwise, {0, 4, 8, 8, 0, 0}, "fusing linalg.generic, linalg.fill"},
      {"pool_nchw_max", kPoolNchwMax, {0, 8, 4, 8, 0, 0}, "fusing linalg.generic, linalg.fill"},
      {"add_relu", kElementwise, {16, 32}, "fusing linalg.add"},
      {"contraction", kContraction, {8, 16, 4, 0}, "fusing linalg.generic, linalg.fill"},
  };
  for (const FusionCase &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text);
    ASSERT_TRUE(s);
    ASSERT_TRUE(typeLegal(*s, ActionType::TiledFusion)) << typeReason(*s, ActionType::TiledFusion);
    auto r = s->step(act(*s, ActionType::TiledFusion, c.sizes));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->applied) << r->failureReason;
    EXPECT_NE(r->description.find(c.fused), std::string::npos) << r->description;
    auto m = currentModule(*s);
    EXPECT_EQ(count(*m, "scf.forall"), 1);
    auto producer = transforms::findTaggedOps(*m, 0);
    ASSERT_EQ(producer.size(), 1u);
    EXPECT_TRUE(transforms::isInsideForall(producer[0]));
    expectCorrectAndReplayable(*s);
  }
}

TEST(TiledFusion, MaskedWithoutAProducerAfterTilingAndInsideAForall) {
  // A conv without a producer op for its input still has its fill to fuse.
  auto strided = start("conv_nhwc_s2", kConvNhwcStrided);
  ASSERT_TRUE(strided);
  EXPECT_TRUE(typeLegal(*strided, ActionType::TiledFusion));
  // An elementwise op on a function argument writing into a tensor.empty has nothing to fuse.
  const char *noProducer = R"mlir(
    #id = affine_map<(d0, d1) -> (d0, d1)>
    func.func @relu(%X: tensor<64x64xf32>) -> tensor<64x64xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<64x64xf32>
      %r = linalg.generic {indexing_maps = [#id, #id], iterator_types = ["parallel", "parallel"]}
          ins(%X : tensor<64x64xf32>) outs(%e : tensor<64x64xf32>) {
      ^bb0(%x: f32, %o: f32):
        %y = arith.maximumf %x, %zero : f32
        linalg.yield %y : f32
      } -> tensor<64x64xf32>
      return %r : tensor<64x64xf32>
    })mlir";
  auto lone = start("lone_relu", noProducer);
  ASSERT_TRUE(lone);
  EXPECT_FALSE(typeLegal(*lone, ActionType::TiledFusion));
  EXPECT_NE(typeReason(*lone, ActionType::TiledFusion).find("produced"), std::string::npos);
  EXPECT_EQ(lone->step(act(*lone, ActionType::TiledFusion, {8, 8})).status().code(),
            absl::StatusCode::kInvalidArgument);
  // A tiled matmul reads slices and loop-carried accumulators: nothing to fuse (never across a tiled reduction).
  auto s = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 0, 16})));
  EXPECT_FALSE(typeLegal(*s, ActionType::TiledFusion));
  // After tiled parallelization the op sits in a forall.
  auto t = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*t, act(*t, ActionType::TiledParallelization, {8, 8, 0})));
  EXPECT_FALSE(typeLegal(*t, ActionType::TiledFusion));
  EXPECT_NE(typeReason(*t, ActionType::TiledFusion).find("parallel loop"), std::string::npos);
}

TEST(TiledFusion, WithoutParallelTileItIsTiledParallelization) {
  auto s = start("matmul", kMatmul);
  auto r = s->step(act(*s, ActionType::TiledFusion, {0, 0, 16}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("nothing fused"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  EXPECT_EQ(count(*m, "scf.forall"), 0);
  EXPECT_EQ(count(*m, "scf.for"), 1);
  expectCorrect(*s);
}

// ---- IMG2COL ---------------------------------------------------------------------------------------------------

TEST(Img2Col, ConvolutionsBecomeTaggedContractionsAndComputeTheReference) {
  struct Case {
    const char *name;
    std::string text;
    int64_t tag;
    const char *contraction;
  };
  std::vector<Case> cases = {
      {"conv_nhwc", kConvNhwc, 1, "linalg.generic"},       {"conv_nhwc_s2", kConvNhwcStrided, 0, "linalg.generic"},
      {"conv_nchw", kConvNchw, 1, "linalg.generic"},       {"conv_fhwc", kConvFhwc, 0, "linalg.generic"},
      {"depthwise", kDepthwise, 1, "linalg.batch_matvec"},
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text);
    ASSERT_TRUE(s);
    ASSERT_TRUE(typeLegal(*s, ActionType::Img2Col)) << typeReason(*s, ActionType::Img2Col);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Img2Col)));
    auto m = currentModule(*s);
    auto ops = transforms::findTaggedOps(*m, c.tag);
    ASSERT_EQ(ops.size(), 1u);
    EXPECT_EQ(ops[0]->getName().getStringRef(), c.contraction);
    EXPECT_GE(ops[0].getNumReductionLoops(), 1u);
    EXPECT_FALSE(typeLegal(*s, ActionType::Img2Col));  // no convolution any more
    expectCorrectAndReplayable(*s);
  }
}

TEST(Img2Col, TheContractionFusesThePackingAndVectorizes) {
  auto s = start("conv_nhwc", kConvNhwc);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Img2Col)));
  // The NHWC contraction: loops (n, m = oh*ow, f, k = kh*kw*c) = (1, 256, 16, 72).
  auto module = currentModule(*s);
  auto lop = transforms::findTaggedOp(*module, 1);
  ASSERT_TRUE(lop);
  ASSERT_EQ(lop.getStaticLoopRanges(), (llvm::SmallVector<int64_t>{1, 256, 16, 72}));
  ASSERT_TRUE(typeLegal(*s, ActionType::TiledFusion)) << typeReason(*s, ActionType::TiledFusion);
  auto r = s->step(act(*s, ActionType::TiledFusion, {0, 32, 16, 0}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("fusing linalg.generic"), std::string::npos) << r->description;
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 8, 16, 1})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  expectCorrectAndReplayable(*s);
}

TEST(Img2Col, InsideTiledLoopsStaysCorrect) {
  // Convolutions tiled first (the reduction loops become scf.for with the accumulator carried): img2col inside them.
  struct Case {
    const char *name;
    std::string text;
    ActionType type;
    std::vector<int64_t> tiles;
  };
  std::vector<Case> cases = {
      {"conv_nhwc", kConvNhwc, ActionType::TiledParallelization, {0, 8, 0, 8, 0, 1, 4}},
      {"conv_nchw", kConvNchw, ActionType::Tiling, {0, 8, 4, 0, 4, 1, 0}},
      {"conv_fhwc", kConvFhwc, ActionType::Tiling, {0, 2, 0, 8, 0, 0, 4}},
      {"depthwise", kDepthwise, ActionType::TiledParallelization, {0, 8, 0, 8, 0, 0}},  // forall only: allowed
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text);
    ASSERT_TRUE(applyOk(*s, act(*s, c.type, c.tiles)));
    ASSERT_TRUE(typeLegal(*s, ActionType::Img2Col)) << typeReason(*s, ActionType::Img2Col);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Img2Col)));
    expectCorrectAndReplayable(*s);
  }
  // A depthwise convolution inside an scf.for is refused (its rewrite cannot be bufferized in place there).
  auto d = start("depthwise", kDepthwise);
  ASSERT_TRUE(applyOk(*d, act(*d, ActionType::Tiling, {0, 8, 0, 0, 0, 1})));
  EXPECT_FALSE(typeLegal(*d, ActionType::Img2Col));
  EXPECT_NE(typeReason(*d, ActionType::Img2Col).find("scf.for"), std::string::npos);
}

TEST(Img2Col, MaskedForPoolingMatmulAndDilatedConvolutions) {
  auto pool = start("pool_nchw_max", kPoolNchwMax);
  EXPECT_FALSE(typeLegal(*pool, ActionType::Img2Col));
  auto mm = start("matmul", kMatmul);
  EXPECT_FALSE(typeLegal(*mm, ActionType::Img2Col));
  const char *dilated = R"mlir(
    func.func @dilated(%I: tensor<1x12x12x8xf32>, %F: tensor<3x3x8x16xf32>) -> tensor<1x8x8x16xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<1x8x8x16xf32>
      %f = linalg.fill ins(%zero : f32) outs(%e : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
      %r = linalg.conv_2d_nhwc_hwcf {dilations = dense<2> : tensor<2xi64>, strides = dense<1> : tensor<2xi64>}
          ins(%I, %F : tensor<1x12x12x8xf32>, tensor<3x3x8x16xf32>) outs(%f : tensor<1x8x8x16xf32>) -> tensor<1x8x8x16xf32>
      return %r : tensor<1x8x8x16xf32>
    })mlir";
  auto d = start("conv_dilated", dilated);
  EXPECT_FALSE(typeLegal(*d, ActionType::Img2Col));
  EXPECT_NE(typeReason(*d, ActionType::Img2Col).find("dilations"), std::string::npos);
}

// ---- PACK ------------------------------------------------------------------------------------------------------

TEST(Pack, MatmulTransposeBPacksAlongNAndVectorizesFullWidth) {
  auto s = start("matmul_transpose_b", kMatmulTransposeB);
  ASSERT_TRUE(s);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::NoTransformation)));  // the relu
  ASSERT_TRUE(typeLegal(*s, ActionType::Pack)) << typeReason(*s, ActionType::Pack);
  auto r = s->step(act(*s, ActionType::Pack));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("loop 1 by 16"), std::string::npos) << r->description;
  // The packed contraction carries the tag: loops (m, n / 16, k, 16), B transposed in blocks of 16 rows.
  auto m = currentModule(*s);
  auto ops = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{24, 4, 40, 16}));
  EXPECT_EQ(count(*m, "tensor.pack") + count(*m, "tensor.unpack"), 0);
  EXPECT_EQ(count(*m, "linalg.matmul_transpose_b"), 0);
  // B's blocked transposition is vectorized at once, 8 (of k = 40) by the 16 rows of a block per step; C's packing
  // and unpacking only reshape and copy (transposes by the identity), and stay.
  std::string ir;
  llvm::raw_string_ostream(ir) << *m;
  EXPECT_NE(ir.find("vector<1x8x16xf32>"), std::string::npos) << ir;
  EXPECT_EQ(ir.find("permutation = [0, 2, 1]"), std::string::npos) << ir;
  EXPECT_EQ(count(*m, "linalg.transpose"), 2) << ir;
  EXPECT_FALSE(typeLegal(*s, ActionType::Pack));  // packed already: its contiguous loop is contiguous everywhere
  expectCorrectAndReplayable(*s);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {8, 2, 1, 0})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  m = currentModule(*s);
  EXPECT_GE(count(*m, "vector.transfer_write"), 1);
  EXPECT_TRUE(transforms::findTaggedOps(*m, 0).empty());  // vectorized: no linalg op left with the tag
  expectCorrectAndReplayable(*s);
}

TEST(Pack, F64PacksByEightAndComputesTheReference) {
  auto s = start("bmm_tb", kBatchMatmulTransposeBF64);
  ASSERT_TRUE(s);
  ASSERT_TRUE(typeLegal(*s, ActionType::Pack)) << typeReason(*s, ActionType::Pack);
  auto r = s->step(act(*s, ActionType::Pack));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("loop 2 by 8"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  auto ops = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{2, 8, 3, 16, 8}));
  expectCorrectAndReplayable(*s);
}

TEST(Pack, MaskedWhereItWouldChangeNothingOrCannotApply) {
  // A plain matmul: j is contiguous in B and C already.
  auto mm = start("matmul_relu", kMatmulRelu);
  ASSERT_TRUE(applyOk(*mm, act(*mm, ActionType::NoTransformation)));
  EXPECT_FALSE(typeLegal(*mm, ActionType::Pack));
  EXPECT_NE(typeReason(*mm, ActionType::Pack).find("contiguous in every input"), std::string::npos)
      << typeReason(*mm, ActionType::Pack);
  // Elementwise ops have no reduction.
  auto relu = start("matmul_transpose_b", kMatmulTransposeB);
  EXPECT_FALSE(typeLegal(*relu, ActionType::Pack));
  EXPECT_NE(typeReason(*relu, ActionType::Pack).find("contractions"), std::string::npos);
  // After tiling, the op is inside loops.
  ASSERT_TRUE(applyOk(*relu, act(*relu, ActionType::NoTransformation)));
  ASSERT_TRUE(applyOk(*relu, act(*relu, ActionType::Tiling, {8, 0, 0})));
  EXPECT_FALSE(typeLegal(*relu, ActionType::Pack));
  EXPECT_NE(typeReason(*relu, ActionType::Pack).find("before tiling"), std::string::npos);
  // No vector width of at least 4 divides n = 30 into blocks.
  const char *odd = R"mlir(
    func.func @odd(%A: tensor<8x16xf32>, %B: tensor<30x16xf32>) -> tensor<8x30xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<8x30xf32>
      %f = linalg.fill ins(%zero : f32) outs(%e : tensor<8x30xf32>) -> tensor<8x30xf32>
      %r = linalg.matmul_transpose_b ins(%A, %B : tensor<8x16xf32>, tensor<30x16xf32>) outs(%f : tensor<8x30xf32>) -> tensor<8x30xf32>
      return %r : tensor<8x30xf32>
    })mlir";
  auto o = start("odd", odd);
  EXPECT_FALSE(typeLegal(*o, ActionType::Pack));
  EXPECT_NE(typeReason(*o, ActionType::Pack).find("(30)"), std::string::npos) << typeReason(*o, ActionType::Pack);
}

// ---- SPLIT_REDUCTION -------------------------------------------------------------------------------------------

TEST(SplitReduction, MatmulTransposeBSplitsKIntoLanesAndVectorizes) {
  auto s = start("matmul_transpose_b", kMatmulTransposeB);
  ASSERT_TRUE(s);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::NoTransformation)));  // the relu
  ASSERT_TRUE(typeLegal(*s, ActionType::SplitReduction)) << typeReason(*s, ActionType::SplitReduction);
  auto r = s->step(act(*s, ActionType::SplitReduction));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  // k = 40: 16 lanes do not divide it, 8 do.
  EXPECT_NE(r->description.find("loop 2 into 8 lanes"), std::string::npos) << r->description;
  // The split op carries the tag: loops (m, n, k / 8, lane), the lanes innermost and parallel; the partial sums are
  // combined by an untagged op, vectorized at once: 16 outputs (of n = 64) by the 8 lanes per step.
  auto m = currentModule(*s);
  auto ops = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{24, 64, 5, 8}));
  EXPECT_EQ(ops[0].getNumReductionLoops(), 1u);
  EXPECT_EQ(count(*m, "linalg.matmul_transpose_b"), 0);
  EXPECT_EQ(count(*m, "linalg.generic"), 2);  // the split op, the relu
  std::string ir;
  llvm::raw_string_ostream(ir) << *m;
  EXPECT_EQ(count(*m, "vector.multi_reduction"), 1) << ir;
  EXPECT_NE(ir.find("vector<1x16x8xf32>"), std::string::npos) << ir;
  // Its reduction (k / 8) is read with stride 8 now: splitting again is refused.
  EXPECT_FALSE(typeLegal(*s, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*s, ActionType::SplitReduction).find("contiguously"), std::string::npos);
  expectCorrectAndReplayable(*s);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {4, 8, 1, 0})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  m = currentModule(*s);
  EXPECT_GE(count(*m, "vector.transfer_write"), 1);
  EXPECT_TRUE(transforms::findTaggedOps(*m, 0).empty());
  expectCorrectAndReplayable(*s);
}

TEST(SplitReduction, F64SplitsByEightAndComputesTheReference) {
  auto s = start("bmm_tb", kBatchMatmulTransposeBF64);
  ASSERT_TRUE(s);
  ASSERT_TRUE(typeLegal(*s, ActionType::SplitReduction)) << typeReason(*s, ActionType::SplitReduction);
  auto r = s->step(act(*s, ActionType::SplitReduction));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("loop 3 into 8 lanes"), std::string::npos) << r->description;
  auto m = currentModule(*s);
  auto ops = transforms::findTaggedOps(*m, 0);
  ASSERT_EQ(ops.size(), 1u);
  EXPECT_EQ(ops[0].getStaticLoopRanges(), (llvm::SmallVector<int64_t>{2, 8, 24, 2, 8}));
  expectCorrectAndReplayable(*s);
}

TEST(SplitReduction, MaskedWhereItCannotApplyOrWouldGather) {
  // Elementwise ops have no reduction; poolings read windows (not projected permutations); a sum over two loops has
  // two reductions.
  auto relu = start("matmul_transpose_b", kMatmulTransposeB);
  EXPECT_FALSE(typeLegal(*relu, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*relu, ActionType::SplitReduction).find("has 0"), std::string::npos)
      << typeReason(*relu, ActionType::SplitReduction);
  auto pool = start("pool_nchw_max", kPoolNchwMax);
  EXPECT_FALSE(typeLegal(*pool, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*pool, ActionType::SplitReduction).find("projected permutations"), std::string::npos)
      << typeReason(*pool, ActionType::SplitReduction);
  const char *sum2 = R"mlir(
    func.func @sum2(%X: tensor<4x16x32xf32>) -> tensor<4xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<4xf32>
      %f = linalg.fill ins(%zero : f32) outs(%e : tensor<4xf32>) -> tensor<4xf32>
      %r = linalg.generic {indexing_maps = [affine_map<(i, j, k) -> (i, j, k)>, affine_map<(i, j, k) -> (i)>],
                           iterator_types = ["parallel", "reduction", "reduction"]}
          ins(%X : tensor<4x16x32xf32>) outs(%f : tensor<4xf32>) {
      ^bb0(%x: f32, %o: f32):
        %y = arith.addf %x, %o : f32
        linalg.yield %y : f32
      } -> tensor<4xf32>
      return %r : tensor<4xf32>
    })mlir";
  auto two = start("sum2", sum2);
  EXPECT_FALSE(typeLegal(*two, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*two, ActionType::SplitReduction).find("has 2"), std::string::npos)
      << typeReason(*two, ActionType::SplitReduction);
  // After tiling, the op is inside loops.
  ASSERT_TRUE(applyOk(*relu, act(*relu, ActionType::NoTransformation)));
  ASSERT_TRUE(applyOk(*relu, act(*relu, ActionType::Tiling, {8, 0, 0})));
  EXPECT_FALSE(typeLegal(*relu, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*relu, ActionType::SplitReduction).find("before tiling"), std::string::npos);
  // A column sum reduces its input's outer index: lanes along it would be gathered.
  const char *colsum = R"mlir(
    func.func @colsum(%X: tensor<64x32xf32>) -> tensor<32xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<32xf32>
      %f = linalg.fill ins(%zero : f32) outs(%e : tensor<32xf32>) -> tensor<32xf32>
      %r = linalg.generic {indexing_maps = [affine_map<(j, i) -> (i, j)>, affine_map<(j, i) -> (j)>],
                           iterator_types = ["parallel", "reduction"]}
          ins(%X : tensor<64x32xf32>) outs(%f : tensor<32xf32>) {
      ^bb0(%x: f32, %o: f32):
        %y = arith.addf %x, %o : f32
        linalg.yield %y : f32
      } -> tensor<32xf32>
      return %r : tensor<32xf32>
    })mlir";
  auto c = start("colsum", colsum);
  EXPECT_FALSE(typeLegal(*c, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*c, ActionType::SplitReduction).find("contiguously"), std::string::npos)
      << typeReason(*c, ActionType::SplitReduction);
  // k = 30: no lane count of at least 4 divides it.
  const char *odd = R"mlir(
    func.func @odd_k(%A: tensor<8x30xf32>, %B: tensor<16x30xf32>) -> tensor<8x16xf32> {
      %zero = arith.constant 0.0 : f32
      %e = tensor.empty() : tensor<8x16xf32>
      %f = linalg.fill ins(%zero : f32) outs(%e : tensor<8x16xf32>) -> tensor<8x16xf32>
      %r = linalg.matmul_transpose_b ins(%A, %B : tensor<8x30xf32>, tensor<16x30xf32>) outs(%f : tensor<8x16xf32>) -> tensor<8x16xf32>
      return %r : tensor<8x16xf32>
    })mlir";
  auto o = start("odd_k", odd);
  EXPECT_FALSE(typeLegal(*o, ActionType::SplitReduction));
  EXPECT_NE(typeReason(*o, ActionType::SplitReduction).find("(30)"), std::string::npos)
      << typeReason(*o, ActionType::SplitReduction);
}

// ---- UNROLL ----------------------------------------------------------------------------------------------------

struct UnrollCase {
  const char *name;
  std::string text;
  std::vector<int64_t> tiles;  // TILING first (creates the loops)
  int64_t factor;
  bool vectorize;  // then vectorize the unrolled copies
};

TEST(Unroll, EveryFamilyComputesTheReference) {
  std::vector<UnrollCase> cases = {
      {"matmul", kMatmul, {4, 16, 4}, 4, true},                // k loop: 16 trips
      {"batch_matmul", kBatchMatmul, {1, 4, 16, 2}, 8, true},  // k loop: 16 trips
      // Convolutions: vectorizing the 2 copies tiles their output-height and kernel-height loops to 1 (allowed for
      // up to kMaxCopiesForConvVectorization copies; see Unroll.CopiesInOneLoopBodyGetNoLoopsOfTheirOwn).
      {"conv_nhwc", kConvNhwc, {0, 2, 4, 8, 0, 0, 4}, 2, true},       // c loop: 2 trips (removed)
      {"conv_nchw", kConvNchw, {0, 8, 2, 4, 4, 0, 0}, 2, true},       // c loop: 2 trips
      {"depthwise", kDepthwise, {0, 1, 8, 8, 0, 0}, 2, true},         // c loop: 2 trips
      {"pool_nchw_max", kPoolNchwMax, {0, 16, 2, 8, 0, 0}, 2, true},  // ow loop: 2 trips
      {"add_relu", kElementwise, {8, 16}, 8, true},                   // j loop: 8 trips
      {"contraction", kContraction, {4, 16, 2, 0}, 4, true},          // k loop: 4 trips
  };
  for (const UnrollCase &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text);
    ASSERT_TRUE(s);
    EXPECT_FALSE(typeLegal(*s, ActionType::Unroll));  // no loop yet
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, c.tiles)));
    ASSERT_TRUE(typeLegal(*s, ActionType::Unroll)) << typeReason(*s, ActionType::Unroll);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Unroll, {}, 0, c.factor)));
    const auto &sched = s->benchmark().schedule();
    auto module = currentModule(*s);
    auto copies = transforms::findTaggedOps(*module, sched.front().tag);
    EXPECT_EQ(copies.size(), static_cast<size_t>(c.factor));
    if (c.vectorize) {
      ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
      ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
    }
    expectCorrectAndReplayable(*s);
  }
}

TEST(Unroll, MaskAllowsOnlyDivisorsOfTheTripCountAndZeroPicksTheSmallest) {
  auto s = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {4, 8, 16})));  // innermost: k, 64 / 16 = 4 trips
  env::ActionMask m = s->mask();
  const auto &row = m.unroll;
  // Values: 0 default, 1..7 = sizes 1, 2, 4, 8, 16, 32, 64.
  EXPECT_TRUE(row[0]);
  EXPECT_FALSE(row[1]);  // factor 1 does nothing
  EXPECT_TRUE(row[2]);
  EXPECT_TRUE(row[3]);
  EXPECT_FALSE(row[4]);  // 8 > 4 trips
  // The tiling heads' mask is the tiling's alone: a 3-loop op has no loop 11 to tile, so only "no tiling" is marked
  // there; TILING does not read heads past the op's loops, so a value there (an unroll factor an agent sampled from
  // per-head masks, which take the union) is accepted and has no effect.
  const auto &last = m.tiles[s->config().maxLoops - 1];
  EXPECT_TRUE(last[0]);
  EXPECT_EQ(std::count(last.begin(), last.end(), 1), 1);
  auto stray = s->fork()->step(act(*s, ActionType::Tiling, {1}, 0, /*unroll=*/2));
  ASSERT_TRUE(stray.ok()) << stray.status();
  EXPECT_NE(stray->description.find("sizes [1, 0, 0]"), std::string::npos) << stray->description;
  auto masked = s->step(act(*s, ActionType::Unroll, {}, 0, 8));
  EXPECT_EQ(masked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(masked.status().message().find("tile_11"), std::string::npos);
  auto r = s->step(act(*s, ActionType::Unroll));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("by 2"), std::string::npos) << r->description;
  {
    auto module = currentModule(*s);
    EXPECT_EQ(transforms::findTaggedOps(*module, 1).size(), 2u);
  }
  // Two copies now; the loop has 2 trips left: only factor 2 (which removes the loop).
  m = s->mask();
  EXPECT_TRUE(m.unroll[2]);
  EXPECT_FALSE(m.unroll[3]);
  expectCorrectAndReplayable(*s);
}

// MLIR 19's bufferization is exponential in the number of sibling loops chained through an enclosing scf.for, so
// unrolled copies side by side in a loop body get no loops of their own: tile before unrolling.
TEST(Unroll, CopiesInOneLoopBodyGetNoLoopsOfTheirOwn) {
  auto s = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {4, 16, 4})));  // k loop: 16 trips
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Unroll, {}, 0, 4)));
  for (ActionType t : {ActionType::Tiling, ActionType::TiledParallelization}) {
    EXPECT_FALSE(typeLegal(*s, t));
    EXPECT_NE(typeReason(*s, t).find("tile before unrolling"), std::string::npos) << typeReason(*s, t);
  }
  EXPECT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  auto r = s->step(act(*s, ActionType::Tiling, {2, 0, 0}));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);

  // Four convolution copies whose output-height / kernel-height loops vectorization would tile (two are allowed:
  // Unroll.EveryFamilyComputesTheReference).
  auto c = start("conv_nhwc", kConvNhwc);
  ASSERT_TRUE(applyOk(*c, act(*c, ActionType::Tiling, {0, 2, 4, 8, 0, 0, 2})));  // c loop: 4 trips
  ASSERT_TRUE(applyOk(*c, act(*c, ActionType::Unroll, {}, 0, 4)));
  EXPECT_FALSE(typeLegal(*c, ActionType::Vectorization));
  EXPECT_NE(typeReason(*c, ActionType::Vectorization).find("output-height"), std::string::npos)
      << typeReason(*c, ActionType::Vectorization);
}

// MLIR 19's bufferization doubles its time with every loop level around an op: tiling stops at kMaxLoopDepth levels,
// and with fewer levels left than loops to tile, only the first loops that can shrink keep sizes below their bound.
TEST(Tiling, LoopDepthIsBounded) {
  auto s = start("conv_nhwc", kConvNhwc);  // loops n, oh, ow, f, kh, kw, c = 1, 16, 16, 16, 3, 3, 8
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 8, 8, 8, 1, 1, 4})));  // 6 levels
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 4, 4, 4, 0, 0, 2})));  // 10
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 2, 2, 2, 0, 0, 1})));  // 14
  {
    auto module = currentModule(*s);
    ASSERT_EQ(transforms::loopDepth(transforms::findTaggedOps(*module, s->benchmark().schedule().front().tag).front()),
              14);
  }
  // Bounds now 1, 2, 2, 2, 1, 1, 1: oh, ow and f could shrink but 2 levels are left: oh and ow keep size 1.
  env::ActionMask m = s->mask();
  EXPECT_TRUE(m.tiles[1][1]);
  EXPECT_TRUE(m.tiles[2][1]);
  EXPECT_FALSE(m.tiles[3][1]);
  EXPECT_TRUE(m.tiles[3][2]);  // size 2 = the bound: no new level
  auto masked = s->step(act(*s, ActionType::Tiling, {0, 0, 0, 1}));
  EXPECT_EQ(masked.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 1, 1, 0})));  // 16 levels: none left
  for (ActionType t : {ActionType::Tiling, ActionType::TiledParallelization}) {
    EXPECT_FALSE(typeLegal(*s, t));
    EXPECT_NE(typeReason(*s, t).find("loop levels"), std::string::npos) << typeReason(*s, t);
  }
  // Output height and kernel height are 1 already: vectorization adds no loop.
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  expectCorrectAndReplayable(*s);
}

// ---- PEELED_TILING -----------------------------------------------------------------------------------------------

std::vector<llvm::SmallVector<int64_t>> taggedRanges(const Session &s, int64_t tag) {
  auto module = currentModule(s);
  std::vector<llvm::SmallVector<int64_t>> out;
  for (mlir::linalg::LinalgOp op : transforms::findTaggedOps(*module, tag)) out.push_back(op.getStaticLoopRanges());
  return out;
}

// Sizes: 1, 2, 4, 8, 16, 32, 64 (head values 1..7).
TEST(PeeledTiling, MaskAllowsNonDividingSizesThatFit) {
  auto s = start("matmul_odd", kMatmulOdd);
  ASSERT_TRUE(s);
  ASSERT_TRUE(typeLegal(*s, ActionType::PeeledTiling)) << typeReason(*s, ActionType::PeeledTiling);
  env::ActionMask m = s->mask();
  // j = 100: TILING only divisors (1, 2, 4), PEELED_TILING every size up to 64.
  EXPECT_EQ(m.tiles[1], (std::vector<uint8_t>{1, 1, 1, 1, 0, 0, 0, 0}));
  EXPECT_EQ(m.tilesPeeled[1], (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 1}));
  // k = 40: 64 does not fit.
  EXPECT_EQ(m.tilesPeeled[2], (std::vector<uint8_t>{1, 1, 1, 1, 1, 1, 1, 0}));
  auto masked = s->step(act(*s, ActionType::PeeledTiling, {0, 0, 64}));
  EXPECT_EQ(masked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(masked.status().message().find("PEELED_TILING"), std::string::npos) << masked.status();
  auto tilingMasked = s->step(act(*s, ActionType::Tiling, {0, 16, 0}));
  EXPECT_EQ(tilingMasked.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(s->status().step, 0);
}

TEST(PeeledTiling, MainAndRemainderTilesAreStaticAndVectorize) {
  auto s = start("matmul_odd", kMatmulOdd);
  ASSERT_TRUE(s);
  int64_t tag = s->benchmark().schedule().front().tag;
  // j: 100 = 6 x 16 + 4 -> a main copy with j = 16 and a remainder copy with j = 4, both static.
  auto r = s->step(act(*s, ActionType::PeeledTiling, {4, 16, 0}));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("PEELED_TILING"), std::string::npos) << r->description;
  EXPECT_EQ(taggedRanges(*s, tag), (std::vector<llvm::SmallVector<int64_t>>{{4, 16, 40}, {4, 4, 40}}));
  expectCorrectAndReplayable(*s);
  // Copies with different bounds get their own sizes: k = 40 = 2 x 16 + 8 is peeled in both; j = 4 stays whole.
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::PeeledTiling, {0, 16, 16})));
  EXPECT_EQ(taggedRanges(*s, tag),
            (std::vector<llvm::SmallVector<int64_t>>{{4, 16, 16}, {4, 16, 8}, {4, 4, 16}, {4, 4, 8}}));
  expectCorrectAndReplayable(*s);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 0, 1})));
  ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Vectorization)));
  auto module = currentModule(*s);
  EXPECT_EQ(count(*module, "linalg.matmul"), 0);
  EXPECT_GE(count(*module, "vector.transfer_write"), 4);  // one vector store per copy at least
  expectCorrectAndReplayable(*s);
}

TEST(PeeledTiling, DividingSizesTileLikeTiling) {
  auto a = start("matmul", kMatmul), b = start("matmul", kMatmul);
  ASSERT_TRUE(a && b);
  ASSERT_TRUE(applyOk(*a, act(*a, ActionType::Tiling, {8, 16, 8})));
  ASSERT_TRUE(applyOk(*b, act(*b, ActionType::PeeledTiling, {8, 16, 8})));
  EXPECT_EQ(a->currentIR(), b->currentIR());
  expectCorrectAndReplayable(*b);
}

TEST(PeeledTiling, EveryFamilyComputesTheReference) {
  // Tile sizes that leave remainders on the families' loops (16 = 3 x 5 + 1, 16 = 2 x 6 + 4, 8 = 2 x 3 + 2, ...).
  SessionConfig config;
  config.tileSizes = {1, 2, 3, 5, 6, 8, 16, 32, 64};
  struct Case {
    const char *name;
    std::string text;
    std::vector<int64_t> sizes;
  };
  std::vector<Case> cases = {
      {"conv_nhwc", kConvNhwc, {0, 5, 6, 0, 0, 0, 3}},
      {"conv_nchw", kConvNchw, {0, 5, 6, 5}},
      {"depthwise", kDepthwise, {0, 5, 6, 5}},
      {"pool_nchw_max", kPoolNchwMax, {0, 5, 6, 6}},
      {"add_relu", kElementwise, {5, 6}},
      {"batch_matmul", kBatchMatmul, {0, 5, 6, 3}},
      {"matmul_odd", kMatmulOdd, {16, 32, 16}},  // 24 = 16 + 8, 100 = 3 x 32 + 4, 40 = 2 x 16 + 8
  };
  for (const Case &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text, config);
    ASSERT_TRUE(s);
    if (!typeLegal(*s, ActionType::PeeledTiling)) {
      ADD_FAILURE() << typeReason(*s, ActionType::PeeledTiling);
      continue;
    }
    std::vector<int64_t> sizes = c.sizes;
    sizes.resize(s->mask().numLoops, 0);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::PeeledTiling, sizes)));
    expectCorrectAndReplayable(*s);
  }
}

// Unrolled code is bounded by the copies' iteration spaces together (transforms::kMaxUnrolledElements).
TEST(Unroll, FactorsBoundedByTheUnrolledIterationSpace) {
  auto s = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {8, 16, 8})));  // 1024 elements; k loop: 8 trips
  env::ActionMask m = s->mask();
  const auto &row = m.unroll;
  EXPECT_TRUE(row[2]);   // 2 copies: 2048 elements
  EXPECT_FALSE(row[3]);  // 4 copies: 4096
  auto big = start("matmul", kMatmul);
  ASSERT_TRUE(applyOk(*big, act(*big, ActionType::Tiling, {8, 16, 16})));  // 2048 elements: no factor fits
  EXPECT_FALSE(typeLegal(*big, ActionType::Unroll));
  EXPECT_NE(typeReason(*big, ActionType::Unroll).find("iteration-space elements"), std::string::npos)
      << typeReason(*big, ActionType::Unroll);
  // A convolution counts without its output-height and kernel-height loops (they stay loops when it vectorizes).
  auto conv = start("conv_nhwc", kConvNhwc);
  ASSERT_TRUE(applyOk(*conv, act(*conv, ActionType::Tiling, {0, 2, 4, 8, 0, 0, 4})));  // 2304 elements, 384 counted
  {
    auto module = currentModule(*conv);
    EXPECT_EQ(transforms::totalIterationElements(
                  transforms::findTaggedOps(*module, conv->benchmark().schedule().front().tag)),
              384);
  }
  EXPECT_TRUE(typeLegal(*conv, ActionType::Unroll)) << typeReason(*conv, ActionType::Unroll);
}

TEST(Unroll, MaskedForAnOpWithMaxLoopsLoops) {
  SessionConfig c;
  c.maxLoops = 3;
  auto s = start("matmul", kMatmul, c);
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {8, 16, 16})));
  EXPECT_FALSE(typeLegal(*s, ActionType::Unroll));
  EXPECT_NE(typeReason(*s, ActionType::Unroll).find("tile_2"), std::string::npos);
}

// ---- VECTORIZATION of convolutions and pooling ------------------------------------------------------------------

struct ConvVectorCase {
  const char *name;
  std::string text;
  std::vector<int64_t> tiles;
  bool smallUntiled = false;  // the untiled op is within the limits already (the fragment tiles oh and kh itself)
};

TEST(ConvVectorization, TiledConvolutionsAndPoolingVectorize) {
  std::vector<ConvVectorCase> cases = {
      // 1-D space after oh = kh = 1: n, ow, f, kw, c.
      {"conv_nhwc", kConvNhwc, {0, 2, 4, 8, 0, 0, 4}},
      {"conv_nhwc_s2", kConvNhwcStrided, {0, 1, 4, 8, 1, 0, 4}},  // already oh = kh = 1: nothing to tile first
      {"conv_nchw", kConvNchw, {0, 8, 2, 4, 4, 0, 0}},
      {"depthwise", kDepthwise, {0, 4, 8, 16, 0, 0}},
      {"pool_nchw_max", kPoolNchwMax, {0, 16, 4, 8, 0, 0}},
      {"pool_nhwc_sum_s2", pooling("pooling_nhwc_sum", false, true, "0.0"), {0, 2, 8, 16, 0, 0}, true},
      {"pool_nchw_sum", pooling("pooling_nchw_sum", true, false, "0.0"), {0, 16, 2, 8, 0, 0}, true},
      {"pool_nhwc_max", pooling("pooling_nhwc_max", false, false, "-3.40282347E+38"), {0, 2, 8, 16, 0, 0}, true},
      {"pool_nhwc_min", pooling("pooling_nhwc_min", false, false, "3.40282347E+38"), {0, 2, 8, 16, 0, 0}, true},
  };
  for (const ConvVectorCase &c : cases) {
    SCOPED_TRACE(c.name);
    auto s = start(c.name, c.text);
    ASSERT_TRUE(s);
    EXPECT_EQ(typeLegal(*s, ActionType::Vectorization), c.smallUntiled);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, c.tiles)));
    ASSERT_TRUE(typeLegal(*s, ActionType::Vectorization)) << typeReason(*s, ActionType::Vectorization);
    auto r = s->step(act(*s, ActionType::Vectorization));
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_TRUE(r->applied) << r->failureReason;
    auto m = currentModule(*s);
    int convs = 0, vectors = 0;
    m->walk([&](mlir::Operation *op) {
      llvm::StringRef n = op->getName().getStringRef();
      convs += n.starts_with("linalg.conv") || n.starts_with("linalg.depthwise") || n.starts_with("linalg.pooling");
      vectors += n.starts_with("vector.");
    });
    EXPECT_EQ(convs, 0);
    EXPECT_GT(vectors, 0);
    expectCorrectAndReplayable(*s);
  }
}

TEST(ConvVectorization, MaskedWhenTooWideOrNotDecomposable) {
  auto s = start("conv_nhwc", kConvNhwc);
  // f = 16 fits, but ow = 16 with c = 8, f = 16 gives 1-D space 16 * 16 * 3 * 8 > 512.
  ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Tiling, {0, 1, 0, 0, 1, 0, 0})));
  EXPECT_FALSE(typeLegal(*s, ActionType::Vectorization));
  EXPECT_NE(typeReason(*s, ActionType::Vectorization).find("exceeds"), std::string::npos);
  // A small untiled pooling vectorizes at once: the fragment tiles output height and kernel height to 1 itself.
  auto pool = start("pool_nhwc_sum_s2", pooling("pooling_nhwc_sum", false, true, "0.0"));
  ASSERT_TRUE(typeLegal(*pool, ActionType::Vectorization)) << typeReason(*pool, ActionType::Vectorization);
  ASSERT_TRUE(applyOk(*pool, act(*pool, ActionType::Vectorization)));
  expectCorrectAndReplayable(*pool);
  auto fhwc = start("conv_fhwc", kConvFhwc);
  ASSERT_TRUE(applyOk(*fhwc, act(*fhwc, ActionType::Tiling, {0, 1, 4, 8, 1, 0, 4})));
  EXPECT_FALSE(typeLegal(*fhwc, ActionType::Vectorization));
  EXPECT_NE(typeReason(*fhwc, ActionType::Vectorization).find("cannot vectorize"), std::string::npos);
}

// ---- INTERCHANGE by enumerated swaps -----------------------------------------------------------------------------

TEST(SwapInterchange, LayoutMasksAndOneStepSwaps) {
  EXPECT_EQ(transforms::numSwaps(12), 30);
  EXPECT_EQ(transforms::numSwaps(2), 1);
  EXPECT_EQ(transforms::swapLoops(0, 12), (std::optional<std::pair<int64_t, int64_t>>({0, 1})));
  EXPECT_EQ(transforms::swapLoops(10, 12), (std::optional<std::pair<int64_t, int64_t>>({10, 11})));
  EXPECT_EQ(transforms::swapLoops(11, 12), (std::optional<std::pair<int64_t, int64_t>>({0, 2})));
  EXPECT_EQ(transforms::swapLoops(21, 12), (std::optional<std::pair<int64_t, int64_t>>({0, 3})));
  EXPECT_EQ(transforms::swapLoops(29, 12), (std::optional<std::pair<int64_t, int64_t>>({8, 11})));
  EXPECT_EQ(transforms::swapLoops(30, 12), std::nullopt);

  SessionConfig c;
  c.interchangeMode = env::InterchangeMode::Swaps;
  auto s = start("matmul", kMatmul, c);
  EXPECT_EQ(s->actionSpace().nvec().back(), 30);
  env::ActionMask m = s->mask();
  ASSERT_EQ(m.interchange.size(), 30u);
  // matmul has 3 loops: swaps (0,1) = 0, (1,2) = 1, (0,2) = 11.
  for (int i = 0; i < 30; ++i) EXPECT_EQ(m.interchange[i], i == 0 || i == 1 || i == 11) << i;
  auto r = s->step(act(*s, ActionType::Interchange, {}, 11));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_TRUE(r->applied) << r->failureReason;
  EXPECT_NE(r->description.find("[2, 1, 0]"), std::string::npos) << r->description;
  EXPECT_FALSE(s->status().interchangePending);
  EXPECT_EQ(s->step(act(*s, ActionType::Interchange, {}, 2)).status().code(), absl::StatusCode::kInvalidArgument);
  auto module = currentModule(*s);
  auto op = transforms::findTaggedOp(*module, 1);
  ASSERT_TRUE(op);
  EXPECT_EQ(op.getStaticLoopRanges(), (llvm::SmallVector<int64_t>{64, 48, 32}));
  expectCorrectAndReplayable(*s);
}

TEST(SwapInterchange, EveryFamilyComputesTheReference) {
  SessionConfig c;
  c.interchangeMode = env::InterchangeMode::Swaps;
  struct Case {
    const char *name;
    std::string text;
    int64_t swap;
  };
  std::vector<Case> cases = {
      {"matmul", kMatmul, 1},               // (1, 2): k before j
      {"batch_matmul", kBatchMatmul, 21},   // (0, 3): distance 3
      {"conv_nhwc", kConvNhwc, 3},          // (3, 4): kh before f
      {"conv_nchw", kConvNchw, 12},         // (1, 3)
      {"depthwise", kDepthwise, 2},         // (2, 3)
      {"pool_nchw_max", kPoolNchwMax, 13},  // (2, 4)
      {"add_relu", kElementwise, 0},        // (0, 1)
      {"contraction", kContraction, 11},    // (0, 2): k outermost
  };
  for (const Case &k : cases) {
    SCOPED_TRACE(k.name);
    auto s = start(k.name, k.text, c);
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->mask().interchange[k.swap]);
    ASSERT_TRUE(applyOk(*s, act(*s, ActionType::Interchange, {}, k.swap)));
    expectCorrectAndReplayable(*s);
  }
}

// ---- masks are honest -------------------------------------------------------------------------------------------

// Random episodes choosing only unmasked values on every inline module: count the allowed actions that fail to
// apply (the issue's bound is < 1%) and require every evaluated schedule to be correct. MLIR_RL_HONESTY_SEED picks
// another seed; MLIR_RL_DEBUG_HONESTY=1 prints every action and the schedule of each failure.
TEST(MaskHonesty, RandomMaskedEpisodesRarelyFailAndAreAlwaysCorrect) {
  std::vector<std::pair<const char *, std::string>> modules = {
      {"matmul", kMatmul},
      {"matmul_relu", kMatmulRelu},
      {"batch_matmul", kBatchMatmul},
      {"conv_nhwc", kConvNhwc},
      {"conv_nhwc_s2", kConvNhwcStrided},
      {"conv_nchw", kConvNchw},
      {"conv_fhwc", kConvFhwc},
      {"depthwise", kDepthwise},
      {"pool_nchw_max", kPoolNchwMax},
      {"add_relu", kElementwise},
      {"contraction", kContraction},
      {"matmul_odd", kMatmulOdd},
      {"matmul_epilogue", kMatmulEpilogue},
      {"two_matmuls_relu", kTwoMatmulsRelu},
      {"matmul_transpose_b", kMatmulTransposeB},
  };
  std::mt19937_64 rng(getenv("MLIR_RL_HONESTY_SEED") ? std::strtoull(getenv("MLIR_RL_HONESTY_SEED"), nullptr, 10) : 7);
  int steps = 0, failed = 0, evaluated = 0, wrong = 0;
  std::map<int, int> byType, failedByType;
  const int episodesPerModule = 6;  // each episode ends with an evaluation (compile + timed runs)
  for (const auto &[name, text] : modules) {
    for (int e = 0; e < episodesPerModule; ++e) {
      SessionConfig c;
      if (e % 2) c.interchangeMode = env::InterchangeMode::Swaps;
      auto s = start(name, text, c);
      ASSERT_TRUE(s);
      while (!s->done()) {
        env::ActionMask m = s->mask();
        auto pick = [&](const std::vector<uint8_t> &mask) { return testing::pickLegal(mask, rng); };
        // Favour transformations over NO_TRANSFORMATION so episodes go deep, and the new ones half of the time.
        std::vector<uint8_t> types = m.type;
        if (std::count(types.begin() + 1, types.end(), 1) > 0 && rng() % 4 != 0) types[0] = 0;
        std::vector<uint8_t> newTypes(types.size(), 0);
        for (ActionType t : {ActionType::TiledFusion, ActionType::Img2Col, ActionType::Unroll,
                             ActionType::Vectorization, ActionType::PeeledTiling, ActionType::Pack})
          newTypes[static_cast<int>(t)] = types[static_cast<int>(t)];
        if (std::count(newTypes.begin(), newTypes.end(), 1) > 0 && rng() % 2 == 0) types = newTypes;
        std::vector<int64_t> a{pick(types)};
        for (const auto &row : a[0] == static_cast<int>(ActionType::PeeledTiling) ? m.tilesPeeled : m.tiles)
          a.push_back(pick(row));
        a.push_back(pick(m.interchange));
        if (getenv("MLIR_RL_DEBUG_HONESTY")) {
          std::printf("  [%s] step %d:", name, s->status().step);
          for (int64_t v : a) std::printf(" %lld", static_cast<long long>(v));
          std::printf("\n");
          std::fflush(stdout);
        }
        auto r = s->step(a);
        ASSERT_TRUE(r.ok()) << name << ": masked action rejected: " << r.status();
        ++steps;
        ++byType[static_cast<int>(a[0])];
        if (!r->applied) {
          ++failed;
          ++failedByType[static_cast<int>(a[0])];
          std::printf("  [%s] allowed action failed: %s: %s\n", name, r->description.c_str(),
                      r->failureReason.substr(0, 400).c_str());
          if (getenv("MLIR_RL_DEBUG_HONESTY")) std::printf("%s\n", s->schedule().c_str());
        }
        if (r->evaluation) {
          ++evaluated;
          if (!r->evaluation->ok) {
            ++wrong;
            ADD_FAILURE() << name << ": evaluation failed: " << r->evaluation->failure << "\nschedule:\n"
                          << s->schedule();
          }
        }
      }
    }
  }
  std::printf(
      "[mask honesty] %d steps, %d allowed actions failed to apply (%.2f%%), %d schedules evaluated, %d "
      "failed or wrong\n",
      steps, failed, 100.0 * failed / std::max(1, steps), evaluated, wrong);
  for (const auto &[type, n] : byType)
    std::printf("  %-22s %4d steps, %d failed\n", env::actionTypeName(type).c_str(), n, failedByType[type]);
  EXPECT_EQ(wrong, 0);
  EXPECT_LT(failed, std::max(1, steps / 100) + 1);
}

}  // namespace
}  // namespace mlir_rl
