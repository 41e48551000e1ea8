// Every built-in benchmark parses, verifies, compiles, runs, and its output is deterministic.
#include <gtest/gtest.h>

#include "tests/unit/TestSupport.h"

namespace mlir_rl {
namespace {

TEST(Benchmarks, EveryBuiltInRunsDeterministically) {
  auto uris = testing::registry().uris();
  ASSERT_GE(uris.size(), 5u);
  for (const std::string &uri : uris) {
    auto b = testing::registry().get(uri);
    ASSERT_TRUE(b.ok()) << uri << ": " << b.status();
    EXPECT_GE((*b)->info().numOps, 1) << uri;
    EXPECT_FALSE((*b)->info().description.empty()) << uri;
    EXPECT_GT((*b)->info().flops, 0) << uri;
    std::string error;
    auto kernel = runners::Compiler::compile((*b)->module(), {}, error);
    ASSERT_TRUE(kernel) << uri << ": " << error;
    auto inputs = runners::makeInputs(kernel->signature(), 3);
    std::vector<runners::Buffer> first, second;
    ASSERT_TRUE(kernel->run(inputs, first, error)) << error;
    ASSERT_TRUE(kernel->run(inputs, second, error)) << error;
    ASSERT_EQ(first.size(), second.size());
    for (size_t i = 0; i < first.size(); ++i)
      EXPECT_EQ(0, std::memcmp(first[i].data(), second[i].data(), first[i].spec().numBytes())) << uri;
  }
}

TEST(Benchmarks, UnknownAndMalformedUris) {
  EXPECT_EQ(testing::registry().get("benchmark://nn-ops/nope").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(testing::registry().get("nn-ops/matmul").status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mlir_rl
