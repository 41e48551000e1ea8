#include "env/Validation.h"

#include <functional>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Verifier.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Pass/PassRegistry.h"
#include "llvm/Support/raw_ostream.h"

#include "support/Diagnostics.h"

namespace mlir_rl::env {

namespace {

absl::Status invalid(const std::string &what, std::optional<mlir::Location> loc = std::nullopt) {
  std::string where;
  if (loc) where = support::formatLocation(*loc) + ": ";
  return absl::InvalidArgumentError(absl::StrCat("invalid benchmark: ", where, what));
}

// Dialects a kernel may use after TOSA conversion.
const std::set<llvm::StringRef> &allowedDialects() {
  static const std::set<llvm::StringRef> dialects = {"builtin", "func", "linalg", "tensor", "arith", "math"};
  return dialects;
}

int64_t bytesOf(mlir::RankedTensorType t) {
  mlir::Type e = t.getElementType();
  int64_t bits = e.isIntOrFloat() ? e.getIntOrFloatBitWidth() : 64;
  return t.getNumElements() * std::max<int64_t>(1, (bits + 7) / 8);
}

absl::Status checkType(mlir::Type type, mlir::Location loc, const UploadLimits &limits) {
  if (auto tensor = mlir::dyn_cast<mlir::RankedTensorType>(type)) {
    if (!tensor.hasStaticShape()) return invalid("dynamic shapes are not supported (every dimension must be static)", loc);
    if (tensor.getEncoding()) return invalid("tensor encodings (e.g. sparse tensors) are not supported", loc);
    if (bytesOf(tensor) > limits.maxTensorBytes)
      return invalid(absl::StrCat("a tensor of ", bytesOf(tensor), " bytes exceeds the limit of ", limits.maxTensorBytes),
                     loc);
    return absl::OkStatus();
  }
  if (mlir::isa<mlir::UnrankedTensorType>(type)) return invalid("unranked tensors are not supported", loc);
  if (mlir::isa<mlir::BaseMemRefType>(type)) return invalid("memrefs are not accepted: write the kernel on tensors", loc);
  if (type.isIntOrIndexOrFloat() || mlir::isa<mlir::FunctionType>(type)) return absl::OkStatus();
  std::string text;
  llvm::raw_string_ostream os(text);
  os << type;
  return invalid("values of type " + os.str() + " are not supported", loc);
}

bool hasTosa(mlir::ModuleOp module) {
  bool found = false;
  module.walk([&](mlir::Operation *op) {
    if (op->getDialect() && op->getDialect()->getNamespace() == "tosa") {
      found = true;
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  return found;
}

absl::Status convertTosa(mlir::ModuleOp module, support::DiagnosticCapture &capture) {
  mlir::PassManager pm(module.getContext());
  std::string errors;
  llvm::raw_string_ostream es(errors);
  const char *pipeline =
      "func.func(tosa-optional-decompositions,tosa-to-linalg-named,tosa-to-linalg,tosa-to-arith,tosa-to-tensor),"
      "canonicalize,cse";
  if (mlir::failed(mlir::parsePassPipeline(pipeline, pm, es)))
    return absl::InternalError("TOSA pipeline: " + es.str());
  if (mlir::failed(pm.run(module)))
    return invalid("TOSA to Linalg conversion failed: " + capture.take());
  return absl::OkStatus();
}

// Calls must target functions defined in the module, and the call graph must be acyclic.
absl::Status checkCalls(mlir::ModuleOp module) {
  std::map<std::string, std::vector<std::string>> callees;
  absl::Status status = absl::OkStatus();
  module.walk([&](mlir::func::CallOp call) {
    auto target = module.lookupSymbol<mlir::func::FuncOp>(call.getCallee());
    if (!target || target.isExternal()) {
      status = invalid(absl::StrCat("call to external function @", call.getCallee().str(),
                                    " (only functions defined in the module may be called)"),
                       call.getLoc());
      return mlir::WalkResult::interrupt();
    }
    auto caller = call->getParentOfType<mlir::func::FuncOp>();
    callees[caller.getSymName().str()].push_back(call.getCallee().str());
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  std::map<std::string, int> state;  // 0 unvisited, 1 on stack, 2 done
  std::function<bool(const std::string &)> cyclic = [&](const std::string &f) {
    if (state[f] == 1) return true;
    if (state[f] == 2) return false;
    state[f] = 1;
    for (const std::string &g : callees[f])
      if (cyclic(g)) return true;
    state[f] = 2;
    return false;
  };
  for (auto func : module.getOps<mlir::func::FuncOp>())
    if (cyclic(func.getSymName().str()))
      return invalid(absl::StrCat("recursive calls (through @", func.getSymName().str(), ") are not supported"),
                     func.getLoc());
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parseUpload(mlir::MLIRContext *ctx, const std::string &text,
                                                              const std::string &sourceName,
                                                              const UploadLimits &limits) {
  if (text.empty()) return invalid("the MLIR text is empty");
  if (text.size() > limits.maxTextBytes)
    return invalid(absl::StrCat("the MLIR text has ", text.size(), " bytes, more than the limit of ",
                                limits.maxTextBytes));
  support::DiagnosticCapture capture;
  mlir::ParserConfig config(ctx, /*verifyAfterParse=*/true);
  mlir::OwningOpRef<mlir::ModuleOp> module = mlir::parseSourceString<mlir::ModuleOp>(text, config, sourceName);
  if (!module) return invalid("it does not parse:\n" + capture.take());

  // Allow-list before anything else touches the IR (TOSA is accepted here and converted below).
  int64_t ops = 0;
  absl::Status status = absl::OkStatus();
  module->walk<mlir::WalkOrder::PreOrder>([&](mlir::Operation *op) {
    ++ops;
    llvm::StringRef dialect = op->getDialect() ? op->getDialect()->getNamespace() : "";
    if (!allowedDialects().count(dialect) && dialect != "tosa") {
      status = invalid(absl::StrCat("operation '", op->getName().getStringRef().str(),
                                    "' is not allowed (allowed dialects: func, linalg, tensor, arith, math, tosa)"),
                       op->getLoc());
      return mlir::WalkResult::interrupt();
    }
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  if (ops > limits.maxOps)
    return invalid(absl::StrCat("the module has ", ops, " operations, more than the limit of ", limits.maxOps));
  for (auto func : module->getOps<mlir::func::FuncOp>())
    if (func.isExternal())
      return invalid(absl::StrCat("external function @", func.getSymName().str(),
                                  " (declarations of outside symbols are not allowed)"),
                     func.getLoc());

  if (hasTosa(*module)) {
    if (absl::Status s = convertTosa(*module, capture); !s.ok()) return s;
    if (hasTosa(*module)) return invalid("some TOSA operations have no Linalg lowering");
  }

  // Types, limits and operations of the (converted) module.
  module->walk<mlir::WalkOrder::PreOrder>([&](mlir::Operation *op) {
    llvm::StringRef dialect = op->getDialect() ? op->getDialect()->getNamespace() : "";
    if (!allowedDialects().count(dialect)) {
      status = invalid(absl::StrCat("operation '", op->getName().getStringRef().str(), "' is not allowed"),
                       op->getLoc());
      return mlir::WalkResult::interrupt();
    }
    for (mlir::Type t : op->getResultTypes())
      if (status = checkType(t, op->getLoc(), limits); !status.ok()) return mlir::WalkResult::interrupt();
    for (mlir::Region &region : op->getRegions())
      for (mlir::Block &block : region)
        for (mlir::BlockArgument arg : block.getArguments())
          if (status = checkType(arg.getType(), op->getLoc(), limits); !status.ok())
            return mlir::WalkResult::interrupt();
    return mlir::WalkResult::advance();
  });
  if (!status.ok()) return status;
  if (absl::Status s = checkCalls(*module); !s.ok()) return s;
  for (auto func : module->getOps<mlir::func::FuncOp>()) {
    if (!func.isPublic()) continue;
    int64_t argBytes = 0;
    for (mlir::Type t : func.getArgumentTypes())
      if (auto tensor = mlir::dyn_cast<mlir::RankedTensorType>(t)) argBytes += bytesOf(tensor);
    if (argBytes > limits.maxArgumentBytes)
      return invalid(absl::StrCat("the kernel's arguments take ", argBytes, " bytes, more than the limit of ",
                                  limits.maxArgumentBytes),
                     func.getLoc());
  }
  if (mlir::failed(mlir::verify(*module))) return invalid("it does not verify:\n" + capture.take());
  return module;
}

}  // namespace mlir_rl::env
