// Uploads: a corpus of bad modules, each rejected with a message that says what is wrong; good Linalg and TOSA
// modules become benchmarks that compile and run.
#include <gtest/gtest.h>

#include "env/Generators.h"
#include "env/Validation.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

struct BadCase {
  const char *name;
  std::string text;
  const char *expected;  // substring of the error
};

// The server's kind of validation context: only the allowed dialects loaded.
mlir::MLIRContext *uploadContext() {
  static std::unique_ptr<mlir::MLIRContext> ctx = env::createUploadContext();
  return ctx.get();
}

std::string message(const std::string &text) {
  auto m = env::parseUpload(uploadContext(), text, "upload");
  EXPECT_FALSE(m.ok()) << "accepted:\n" << text;
  if (m.ok()) return "";
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  return std::string(m.status().message());
}

TEST(Validation, BadModulesAreRejectedWithPreciseMessages) {
  const std::vector<BadCase> corpus = {
      {"empty", "", "empty"},
      {"syntax error with line and column",
       "func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  return %a : tensor<4xf32\n}", "upload:2:"},
      {"unknown op",
       "func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  %b = foo.bar %a : tensor<4xf32>\n"
       "  return %b : tensor<4xf32>\n}",
       "upload:2:"},
      {"llvm dialect", R"(llvm.func @g() { llvm.return }
func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> })",
       "'llvm.func' is not allowed"},
      // Dialects outside the allow-list are not loaded in the upload context: their parsers are never reached.
      {"spirv custom op",
       "func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  spirv.ControlBarrier <Subgroup>, "
       "<Subgroup>, <None>\n  return %a : tensor<4xf32>\n}",
       "upload:2:3: operation 'spirv.ControlBarrier' is not allowed"},
      {"gpu generic op",
       "func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {\n  \"gpu.barrier\"() : () -> ()\n"
       "  return %a : tensor<4xf32>\n}",
       "upload:2:16: error: operation being parsed with an unregistered dialect"},
      {"memref kernel", "func.func @f(%a: memref<4xf32>) { return }", "memrefs are not accepted"},
      {"dynamic shapes", "func.func @f(%a: tensor<?xf32>) -> tensor<?xf32> { return %a : tensor<?xf32> }",
       "dynamic shapes"},
      {"huge tensor", R"(func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %big = tensor.empty() : tensor<100000x100000xf32>
  return %a : tensor<4xf32>
})",
       "more than the limit of 1073741824 per tensor"},
      {"external call", R"(func.func private @system(i64) -> i64
func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %c = arith.constant 0 : i64
  %r = func.call @system(%c) : (i64) -> i64
  return %a : tensor<4xf32>
})",
       "external function @system"},
      {"recursive calls", R"(func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = func.call @g(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
}
func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %r = func.call @g(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
})",
       "recursive"},
      {"scf loops (not in the allow-list)", R"(func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> {
  %c0 = arith.constant 0 : index
  %c4 = arith.constant 4 : index
  %c1 = arith.constant 1 : index
  scf.for %i = %c0 to %c4 step %c1 { }
  return %a : tensor<4xf32>
})",
       "'scf.for' is not allowed"},
      {"too large", std::string(9u << 20, ' '), "more than the limit"},
      // Issue 13, defect 1: 5,000 nested modules overflowed a gRPC thread's stack inside the parser.
      {"deep nesting",
       [] {
         std::string t;
         for (int i = 0; i < 5000; ++i) t += "module {";
         return t + std::string(5000, '}');
       }(),
       "nest more than 64 levels"},
      {"deep type nesting",
       "func.func @f(%a: " + std::string(3000, '(') + "tensor<4xf32>" + std::string(3000, ')') + ")", "nest more than"},
      {"NUL byte", std::string("func.func @f() {\0}", 18), "NUL byte"},
      // Defect 3: the byte count overflowed int64 and the module was accepted with bytes = 0 or -8.
      {"tensor size overflowing int64",
       "func.func @k(%a: tensor<4294967296x4294967296xf32>) -> "
       "tensor<4294967296x4294967296xf32> { return %a : tensor<4294967296x4294967296xf32> }",
       "more than 2^63"},
      {"tensor size near int64 max",
       "func.func @k(%a: tensor<9223372036854775807xf32>) -> "
       "tensor<9223372036854775807xf32> { return %a : tensor<9223372036854775807xf32> }",
       "more than 2^63"},
      // Defect 9: a kernel named after a C library symbol passed validation, then failed to lower.
      {"kernel named malloc", "func.func @malloc(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }",
       "symbol of the C library"},
      {"kernel named memrefCopy",
       "func.func @memrefCopy(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }",
       "symbol of the C library"},
      {"reserved prefix", "func.func @_mlir_ciface_x(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }",
       "reserved"},
      {"quoted name", "func.func @\"a b\"(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }",
       "not a plain identifier"},
      {"constant index out of bounds", R"(func.func @f(%a: tensor<4xf32>) -> f32 {
  %c9 = arith.constant 9 : index
  %v = tensor.extract %a[%c9] : tensor<4xf32>
  return %v : f32
})",
       "index 9 is outside dimension 0 of size 4"},
      {"dynamic slice size", R"(func.func @f(%a: tensor<8xf32>, %i: tensor<1xi64>) -> tensor<8xf32> {
  %c0 = arith.constant 0 : index
  %n64 = tensor.extract %i[%c0] : tensor<1xi64>
  %n = arith.index_cast %n64 : i64 to index
  %s = tensor.extract_slice %a[0] [%n] [1] : tensor<8xf32> to tensor<?xf32>
  %r = tensor.insert_slice %s into %a[0] [%n] [1] : tensor<?xf32> into tensor<8xf32>
  return %r : tensor<8xf32>
})",
       "dynamic shapes"},
      {"gather", R"(func.func @f(%a: tensor<8xf32>, %i: tensor<2x1xindex>) -> tensor<2xf32> {
  %g = tensor.gather %a[%i] gather_dims([0]) unique : (tensor<8xf32>, tensor<2x1xindex>) -> tensor<2xf32>
  return %g : tensor<2xf32>
})",
       "'tensor.gather' is not supported"},
  };
  for (const BadCase &c : corpus) {
    std::string m = message(c.text);
    EXPECT_NE(m.find(c.expected), std::string::npos) << c.name << ": got \"" << m << "\"";
  }
}

TEST(Validation, TheUploadContextLoadsOnlyTheAllowedDialectsAndTheirDependencies) {
  for (const char *loaded : {"func", "linalg", "tensor", "arith", "math", "tosa"})
    EXPECT_NE(uploadContext()->getLoadedDialect(loaded), nullptr) << loaded;
  for (const char *absent : {"llvm", "gpu", "spirv", "transform", "vector", "emitc", "omp"})
    EXPECT_EQ(uploadContext()->getLoadedDialect(absent), nullptr) << absent;
}

TEST(Validation, TextLimitsAreCheckedBeforeParsing) {
  env::UploadLimits limits;
  limits.maxNesting = 8;
  EXPECT_TRUE(env::checkUploadText("module { func.func @f() -> () { return } }", limits).ok());
  // Brackets inside strings and comments, '->' and '>=' do not count.
  EXPECT_TRUE(env::checkUploadText("// ((((((((((((\n\"{{{{{{{{{{{{\\\"\" -> >= -> >=", limits).ok());
  absl::Status deep = env::checkUploadText("((((((((((x))))))))))", limits);
  EXPECT_EQ(deep.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(deep.message().find("upload:1: brackets nest more than 8 levels"), std::string::npos) << deep;
  EXPECT_EQ(env::tensorBytes({4294967296, 4294967296}, 32), -1);
  EXPECT_EQ(env::tensorBytes({9223372036854775807}, 32), -1);
  EXPECT_EQ(env::tensorBytes({3, 5}, 64), 120);
  EXPECT_EQ(env::tensorBytes({7}, 1), 7);
}

// fuzz_upload found it: MLIR 19's Linalg parser casts the properties written before `ins`/`outs` to a dictionary
// without checking, so `linalg.fill <5> ins(...)` crashed the server inside the parser. Such text is refused before
// parsing; a dictionary there is still accepted.
TEST(Validation, StructuredOpPropertiesThatAreNotADictionaryAreRefusedBeforeParsing) {
  const std::string named = R"(func.func @f(%t: tensor<4xf32>, %c: f32) -> tensor<4xf32> {
  %r = linalg.fill PROPS ins(%c : f32) outs(%t : tensor<4xf32>) -> tensor<4xf32>
  return %r : tensor<4xf32>
})";
  const std::string generic = R"(#map = affine_map<(d0) -> (d0)>
func.func @f(%a: tensor<4xf32>, %t: tensor<4xf32>) -> tensor<4xf32> {
  %r = linalg.generic {indexing_maps = [#map, #map], iterator_types = ["parallel"]} PROPS
      ins(%a : tensor<4xf32>) outs(%t : tensor<4xf32>) {
  ^bb0(%x: f32, %y: f32):
    linalg.yield %x : f32
  } -> tensor<4xf32>
  return %r : tensor<4xf32>
})";
  auto with = [](std::string text, const std::string &props) { return text.replace(text.find("PROPS"), 5, props); };
  for (const char *props :
       {"<5>", "<\"x\">", "< [1, 2] >", "<affine_map<(d0) -> (d0)>>", "<#map> // comment\n", "<unit>"}) {
    for (const std::string &text : {with(named, props), with(generic, props)}) {
      std::string m = message(text);
      EXPECT_NE(m.find("are not a dictionary"), std::string::npos) << props << ": got \"" << m << "\"";
      EXPECT_NE(m.find("upload:"), std::string::npos) << m;
    }
  }
  // Nothing after the properties: the parser reads them (and crashed) before it looks for ins/outs (fuzz_upload's
  // second find).
  std::string bare = "func.func @f(%t: tensor<4xf32>) -> tensor<4xf32> {\n  %f = linalg.fill <2>\n}";
  EXPECT_NE(message(bare).find("upload:2: the properties <...> after 'linalg.fill' are not a dictionary"),
            std::string::npos)
      << message(bare);
  // Attributes of the Linalg dialect are not op names.
  EXPECT_TRUE(env::checkUploadText("%x = arith.constant {a = #linalg.type_fn<cast_signed>} 1 : i32").ok());
  for (const char *props : {"", "<{}>", "< // comment\n {} >"}) {
    auto named_ok = env::parseUpload(uploadContext(), with(named, props), "upload");
    EXPECT_TRUE(named_ok.ok()) << props << ": " << named_ok.status();
    auto generic_ok = env::parseUpload(uploadContext(), with(generic, props), "upload");
    EXPECT_TRUE(generic_ok.ok()) << props << ": " << generic_ok.status();
  }
}

// Issue 13, defect 4: tensor.extract / tensor.insert at an index taken from the input data segfaulted the worker.
// Such indices are clamped into the tensor, so the kernel compiles, runs and stays inside its buffers.
TEST(Validation, DataDependentIndicesAreClampedIntoTheirTensors) {
  const char *text = R"(
func.func @gather_scatter(%table: tensor<16xf32>, %idx: tensor<4xi32>) -> tensor<16xf32> {
  %c0 = arith.constant 0 : index
  %c1 = arith.constant 1 : index
  %i32 = tensor.extract %idx[%c0] : tensor<4xi32>
  %big = arith.constant 1000000000 : i32
  %far = arith.muli %i32, %big : i32
  %i = arith.index_cast %far : i32 to index
  %v = tensor.extract %table[%i] : tensor<16xf32>
  %j32 = tensor.extract %idx[%c1] : tensor<4xi32>
  %neg = arith.subi %j32, %big : i32
  %j = arith.index_cast %neg : i32 to index
  %w = tensor.insert %v into %table[%j] : tensor<16xf32>
  %s = tensor.extract_slice %w[%i] [4] [1] : tensor<16xf32> to tensor<4xf32>
  %r = tensor.insert_slice %s into %w[%j] [4] [1] : tensor<4xf32> into tensor<16xf32>
  return %r : tensor<16xf32>
})";
  auto b = testing::registry().addUpload(text, "out-of-bounds indices from data");
  ASSERT_TRUE(b.ok()) << b.status();
  const std::string &ir = (*b)->taggedText();
  EXPECT_NE(ir.find("arith.minsi"), std::string::npos) << ir;
  EXPECT_NE(ir.find("arith.maxsi"), std::string::npos) << ir;
  // The reference (the kernel as uploaded, clamped) compiles and runs in a worker-less executor: no crash.
  auto ref = testing::evaluator().reference(**b, 0, 1);
  ASSERT_TRUE(ref.ok()) << ref.status();
}

TEST(Validation, KernelShapeRulesComeFromTheRegistry) {
  // Two public functions: the kernel is ambiguous.
  auto two = testing::registry().addUpload(R"(
func.func @f(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> }
func.func @g(%a: tensor<4xf32>) -> tensor<4xf32> { return %a : tensor<4xf32> })",
                                           "");
  ASSERT_FALSE(two.ok());
  EXPECT_NE(two.status().message().find("exactly one public function"), std::string::npos) << two.status();
}

TEST(Validation, LinalgUploadGetsAStableUriAndRuns) {
  const char *text = R"(
func.func @scale(%a: tensor<64x64xf32>, %b: tensor<64x64xf32>) -> tensor<64x64xf32> {
  %init = tensor.empty() : tensor<64x64xf32>
  %r = linalg.mul ins(%a, %b : tensor<64x64xf32>, tensor<64x64xf32>) outs(%init : tensor<64x64xf32>) -> tensor<64x64xf32>
  return %r : tensor<64x64xf32>
})";
  auto first = testing::registry().addUpload(text, "a product");
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = testing::registry().addUpload(text, "");
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*first)->info().uri, (*again)->info().uri);
  EXPECT_EQ((*first)->info().dataset, "user");
  EXPECT_TRUE(testing::registry().get((*first)->info().uri).ok());
  auto ref = testing::evaluator().reference(**first, 0, 1);
  ASSERT_TRUE(ref.ok()) << ref.status();
}

TEST(Validation, TosaUploadIsConvertedToLinalgAndRuns) {
  const char *tosa = R"(
func.func @tosa_mlp(%x: tensor<1x16x32xf32>, %w: tensor<1x32x8xf32>) -> tensor<1x16x8xf32> {
  %m = tosa.matmul %x, %w : (tensor<1x16x32xf32>, tensor<1x32x8xf32>) -> tensor<1x16x8xf32>
  %r = tosa.clamp %m {min_fp = 0.0 : f32, max_fp = 3.4028235e38 : f32, min_int = 0 : i64, max_int = 9223372036854775807 : i64} : (tensor<1x16x8xf32>) -> tensor<1x16x8xf32>
  return %r : tensor<1x16x8xf32>
})";
  auto b = testing::registry().addUpload(tosa, "TOSA matmul + relu");
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_GE((*b)->info().numOps, 2);
  EXPECT_EQ((*b)->taggedText().find("tosa."), std::string::npos);
  auto ref = testing::evaluator().reference(**b, 0, 1);
  ASSERT_TRUE(ref.ok()) << ref.status();
}

}  // namespace
}  // namespace mlir_rl

namespace mlir_rl {
namespace {

TEST(Generators, SameUriSameModuleAndNeverAnEvalOp) {
  for (const std::string &family : env::generatorFamilies()) {
    for (int seed : {0, 1, 17}) {
      std::string uri = "generator://" + family + "/" + std::to_string(seed);
      auto a = testing::registry().get(uri);
      ASSERT_TRUE(a.ok()) << uri << ": " << a.status();
      EXPECT_EQ((*a)->info().split, "train");
      EXPECT_GE((*a)->info().numOps, 1);
      // Regenerated from scratch (not the cache): identical text.
      auto text0 = env::generateBenchmark(family, seed, 0);
      ASSERT_TRUE(text0.ok());
      EXPECT_EQ(*text0, *env::generateBenchmark(family, seed, 0));
      EXPECT_NE(*text0, *env::generateBenchmark(family, seed + 1000, 0)) << family;
    }
  }
  // A generated op never equals an op of the eval split: build the eval set and compare signatures.
  std::set<std::string> eval;
  for (const std::string &uri : testing::registry().uris()) {
    auto b = testing::registry().get(uri);
    if (!b.ok() || (*b)->info().split != "eval") continue;
    (*b)->module().walk([&](mlir::linalg::LinalgOp op) {
      std::string s = op->getName().getStringRef().str();
      llvm::raw_string_ostream os(s);
      for (mlir::Type t : op->getOperandTypes()) os << " " << t;
      eval.insert(os.str());
    });
  }
  ASSERT_FALSE(eval.empty());
  for (int seed = 0; seed < 40; ++seed) {
    auto g = testing::registry().get("generator://conv2d_nchw/" + std::to_string(seed));
    ASSERT_TRUE(g.ok());
    (*g)->module().walk([&](mlir::linalg::LinalgOp op) {
      if (mlir::isa<mlir::linalg::FillOp>(op.getOperation())) return;
      std::string s = op->getName().getStringRef().str();
      llvm::raw_string_ostream os(s);
      for (mlir::Type t : op->getOperandTypes()) os << " " << t;
      EXPECT_EQ(eval.count(os.str()), 0u) << os.str();
    });
  }
}

TEST(Generators, BadUrisAreErrors) {
  EXPECT_EQ(testing::registry().get("generator://nope/1").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::registry().get("generator://matmul/abc").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(testing::registry().get("generator://matmul").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(Generators, GeneratedBenchmarksRunCorrectly) {
  for (const std::string &family : env::generatorFamilies()) {
    auto b = testing::registry().get("generator://" + family + "/3");
    ASSERT_TRUE(b.ok()) << b.status();
    auto ref = testing::evaluator().reference(**b, 0, 1);
    EXPECT_TRUE(ref.ok()) << family << ": " << ref.status();
  }
}

}  // namespace
}  // namespace mlir_rl
