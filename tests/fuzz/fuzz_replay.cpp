// Schedule replay: an episode of legal actions chosen by the input, then its exported Transform script replayed on
// the benchmark as `mlir-opt --transform-interpreter` would. The replay must succeed and give exactly the IR the
// session holds (the script is what users take away; a schedule that does not replay is a broken export).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "env/Session.h"
#include "llvm/Support/raw_ostream.h"
#include "mlir/IR/OperationSupport.h"
#include "mlir/Parser/Parser.h"
#include "support/Diagnostics.h"
#include "tests/fuzz/FuzzSupport.h"
#include "transforms/Transform.h"

using namespace mlir_rl;

namespace {
std::string print(mlir::ModuleOp module) {
  std::string text;
  llvm::raw_string_ostream os(text);
  module->print(os, mlir::OpPrintingFlags().enableDebugInfo(false));
  return os.str();
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz::World &world = fuzz::World::get();
  fuzz::Bytes in(data, size);
  auto benchmark = world.benchmarks.get(fuzz::kBenchmarks[in.below(std::size(fuzz::kBenchmarks))]);
  if (!benchmark.ok()) std::abort();
  env::SessionConfig config;
  config.interchangeMode = in.below(2) ? env::InterchangeMode::Swaps : env::InterchangeMode::LevelPointers;
  config.rewardMode = env::RewardMode::Final;
  auto session = env::Session::create(*benchmark, config, 0, &world.evaluator);
  if (!session.ok()) std::abort();
  env::Session &s = **session;
  std::vector<int64_t> nvec = s.actionSpace().nvec();
  for (int step = 0; step < 16 && !in.empty() && !s.done(); ++step) {
    const env::ActionMask &m = s.mask();
    std::vector<int64_t> action(nvec.size());
    for (size_t h = 0; h < nvec.size(); ++h) {
      const std::vector<uint8_t> &row = h == 0 ? m.type : h + 1 == nvec.size() ? m.interchange : m.tiles[h - 1];
      std::vector<int64_t> legal;
      for (size_t k = 0; k < row.size(); ++k)
        if (row[k]) legal.push_back(static_cast<int64_t>(k));
      action[h] = legal.empty() ? 0 : legal[in.next() % legal.size()];
    }
    (void)s.step(action);  // the last op's end evaluates, which is off here: that step is undone, the rest stays
  }
  mlir::OwningOpRef<mlir::ModuleOp> payload =
      mlir::parseSourceString<mlir::ModuleOp>(s.benchmark().taggedText(), world.context.get());
  support::DiagnosticCapture capture;
  if (!payload || mlir::failed(transforms::applyScript(*payload, s.schedule()))) {
    std::fprintf(stderr, "the exported schedule does not replay: %s\n%s\n", capture.take().c_str(),
                 s.schedule().c_str());
    std::abort();
  }
  mlir::OwningOpRef<mlir::ModuleOp> current =
      mlir::parseSourceString<mlir::ModuleOp>(s.currentIR(), world.context.get());
  if (print(*payload) != print(*current)) {
    std::fprintf(stderr, "the replayed schedule gives other IR than the session's:\n%s\n", s.schedule().c_str());
    std::abort();
  }
  return 0;
}
