#include "transforms/Transform.h"

#include <mutex>

#include "llvm/Support/raw_ostream.h"
#include "mlir/Dialect/Linalg/IR/Linalg.h"
#include "mlir/Dialect/Transform/IR/TransformOps.h"
#include "mlir/Dialect/Transform/Transforms/TransformInterpreterUtils.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"

#include "support/Diagnostics.h"
#include "support/LruCache.h"

namespace mlir_rl::transforms {

std::string formatList(llvm::ArrayRef<int64_t> values) {
  std::string out = "[";
  for (size_t i = 0; i < values.size(); ++i) {
    if (i) out += ", ";
    out += std::to_string(values[i]);
  }
  return out + "]";
}

Fragment renamePrefix(const Fragment &fragment, llvm::StringRef from, llvm::StringRef to) {
  const std::string needle = "%" + from.str() + "_", replacement = "%" + to.str() + "_";
  std::string out;
  out.reserve(fragment.text.size() + fragment.text.size() / 8);
  size_t pos = 0;
  for (size_t hit; (hit = fragment.text.find(needle, pos)) != std::string::npos; pos = hit + needle.size()) {
    out.append(fragment.text, pos, hit - pos);
    out += replacement;
  }
  out.append(fragment.text, pos, std::string::npos);
  return {out};
}

std::string matchTaggedOp(int64_t tag, llvm::StringRef prefix) {
  return "    %" + prefix.str() + "_op = transform.structured.match attributes{" + kOpTagAttr + " = " +
         std::to_string(tag) + " : i64} in %root : (!transform.any_op) -> !transform.any_op\n";
}

std::string retag(llvm::StringRef handle, int64_t tag, llvm::StringRef prefix) {
  std::string p = prefix.str();
  return "    %" + p + "_tag = transform.param.constant " + std::to_string(tag) +
         " : i64 -> !transform.param<i64>\n"
         "    transform.annotate %" +
         handle.str() + " \"" + kOpTagAttr + "\" = %" + p + "_tag : !transform.any_op, !transform.param<i64>\n";
}

std::string tileUsingForStatement(llvm::StringRef handle, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix,
                                  llvm::StringRef result) {
  int numLoops = 0;
  for (int64_t s : sizes) numLoops += s != 0;
  if (numLoops == 0) return "";
  std::string types = "!transform.any_op";
  for (int i = 0; i < numLoops; ++i) types += ", !transform.any_op";
  std::string p = prefix.str();
  return "    %" + p + "_" + result.str() + ", %" + p + "_loops:" + std::to_string(numLoops) +
         " = transform.structured.tile_using_for %" + handle.str() + " tile_sizes " + formatList(sizes) +
         " : (!transform.any_op) -> (" + types + ")\n";
}

std::string tileAndVectorizeStatements(llvm::StringRef handle, llvm::ArrayRef<int64_t> sizes, llvm::StringRef prefix,
                                       llvm::StringRef result) {
  std::string tiled = tileUsingForStatement(handle, sizes, prefix, result);
  std::string target = tiled.empty() ? handle.str() : prefix.str() + "_" + result.str();
  return tiled + "    transform.structured.vectorize %" + target + " : !transform.any_op\n";
}

int64_t largestPowerOfTwoDividing(int64_t n, int64_t cap) {
  int64_t p = std::max<int64_t>(cap, 1);
  while (p > 1 && n % p != 0) p /= 2;
  return p;
}

std::string buildScript(llvm::ArrayRef<Fragment> fragments) {
  std::string script =
      "module attributes {transform.with_named_sequence} {\n"
      "  transform.named_sequence @__transform_main(%root: !transform.any_op {transform.readonly}) {\n";
  for (const Fragment &f : fragments) script += f.text;
  script += "    transform.yield\n  }\n}\n";
  return script;
}

namespace {

// Parsed transform scripts, reused across steps: the same fragment text recurs (the same action on the same op
// from many states), and parsing was ≈12 % of a step. A script module is lent to one caller at a time (the
// interpreter only reads it, but exclusive use needs no argument about that) and returned after use; the least
// recently used go when the pool is full. Leaked on purpose: its modules belong to an MLIRContext static destruction
// may have torn down.
class ScriptPool {
 public:
  static ScriptPool &shared() {
    static ScriptPool *pool = new ScriptPool();
    return *pool;
  }

  mlir::OwningOpRef<mlir::ModuleOp> take(const std::string &script, mlir::MLIRContext *ctx) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (auto module = idle_.take(script); module && (*module)->getContext() == ctx) return std::move(*module);
    }
    // The script is generated from this folder's templates (each one is replayed through mlir-opt, which verifies
    // it, by the export tests), so the parser does not verify it again.
    return mlir::parseSourceString<mlir::ModuleOp>(script, mlir::ParserConfig(ctx, /*verifyAfterParse=*/false));
  }

  void give(const std::string &script, mlir::OwningOpRef<mlir::ModuleOp> module) {
    std::lock_guard<std::mutex> lock(mutex_);
    idle_.insert(script, std::move(module));
  }

 private:
  std::mutex mutex_;
  support::LruCache<std::string, mlir::OwningOpRef<mlir::ModuleOp>> idle_{1024};  // a parsed script: a few KiB
};

}  // namespace

mlir::LogicalResult applyFragments(mlir::ModuleOp payload, llvm::ArrayRef<Fragment> fragments) {
  return applyScript(payload, buildScript(fragments));
}

mlir::LogicalResult applyScript(mlir::ModuleOp payload, const std::string &script) {
  mlir::MLIRContext *ctx = payload.getContext();
  mlir::OwningOpRef<mlir::ModuleOp> scriptModule = ScriptPool::shared().take(script, ctx);
  if (!scriptModule) return payload->emitError("internal error: the transform script does not parse");
  auto entry = scriptModule->lookupSymbol<mlir::transform::NamedSequenceOp>("__transform_main");
  if (!entry) return payload->emitError("the transform script has no @__transform_main");
  mlir::transform::TransformOptions options;
  mlir::LogicalResult applied = mlir::transform::applyTransformNamedSequence(payload, entry, *scriptModule, options);
  ScriptPool::shared().give(script, std::move(scriptModule));
  if (mlir::failed(applied)) return mlir::failure();  // the interpreter emitted why
  // A transformation can leave IR that no longer verifies; that is a failed action, never a new state.
  if (mlir::failed(mlir::verify(payload))) return payload->emitError("the transformed IR does not verify");
  return mlir::success();
}

llvm::ArrayRef<int64_t> LoopRanges::of(mlir::linalg::LinalgOp op) {
  auto [it, inserted] = ranges_.try_emplace(op.getOperation());
  if (inserted) it->second = op.getStaticLoopRanges();
  return it->second;
}

mlir::linalg::LinalgOp findTaggedOp(mlir::ModuleOp module, int64_t tag) {
  mlir::linalg::LinalgOp found;
  module.walk([&](mlir::linalg::LinalgOp op) {
    auto attr = op->getAttrOfType<mlir::IntegerAttr>(kOpTagAttr);
    if (attr && attr.getInt() == tag) {
      found = op;
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  return found;
}

std::vector<mlir::linalg::LinalgOp> findTaggedOps(mlir::ModuleOp module, int64_t tag) {
  std::vector<mlir::linalg::LinalgOp> found;
  module.walk([&](mlir::linalg::LinalgOp op) {
    auto attr = op->getAttrOfType<mlir::IntegerAttr>(kOpTagAttr);
    if (attr && attr.getInt() == tag) found.push_back(op);
  });
  return found;
}

}  // namespace mlir_rl::transforms
