#include "runners/Executor.h"

#include "absl/strings/str_cat.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"

#include "support/Diagnostics.h"

namespace mlir_rl::runners {

const char *failureKindName(FailureKind kind) {
  switch (kind) {
    case FailureKind::None: return "none";
    case FailureKind::Compile: return "compile error";
    case FailureKind::Crash: return "crashed";
    case FailureKind::Timeout: return "timed out";
    case FailureKind::OutOfMemory: return "out of memory";
    case FailureKind::WrongResult: return "wrong result";
    case FailureKind::Internal: return "internal error";
  }
  return "?";
}

namespace {

mlir::OwningOpRef<mlir::ModuleOp> parse(mlir::MLIRContext *ctx, const std::string &text, std::string &error) {
  support::DiagnosticCapture capture;
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, ctx);
  if (!module) error = "does not parse: " + capture.take();
  return module;
}

}  // namespace

std::shared_ptr<const ReferenceCache::Entry> ReferenceCache::get(mlir::MLIRContext *ctx,
                                                                 const std::string &referenceIR, uint64_t seed,
                                                                 int numThreads, std::string &error) {
  std::string key = absl::StrCat(std::hash<std::string>{}(referenceIR), ":", referenceIR.size(), ":", seed, ":",
                                 numThreads);
  std::lock_guard<std::mutex> lock(mutex_);  // one computation at a time; references are computed once
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  auto module = parse(ctx, referenceIR, error);
  if (!module) {
    error = "reference " + error;
    return nullptr;
  }
  CompileOptions options;
  options.numThreads = numThreads;
  auto kernel = Compiler::compile(*module, options, error);
  if (!kernel) {
    error = "reference: " + error;
    return nullptr;
  }
  auto entry = std::make_shared<Entry>();
  entry->inputs = makeInputs(kernel->signature(), seed);
  if (!kernel->run(entry->inputs, entry->outputs, error)) {
    error = "reference: " + error;
    return nullptr;
  }
  entries_.emplace(key, entry);
  return entry;
}

ExecResult executeHere(mlir::MLIRContext *ctx, ReferenceCache &references, const ExecRequest &request,
                       const CompileOptions &baseOptions) {
  ExecResult result;
  std::string error;
  auto reference = references.get(ctx, request.referenceIR, request.seed, request.numThreads, error);
  if (!reference) {
    result.failure = FailureKind::Internal;
    result.message = error;
    return result;
  }
  auto candidate = parse(ctx, request.candidateIR, error);
  if (!candidate) {
    result.failure = FailureKind::Internal;
    result.message = "candidate " + error;
    return result;
  }
  CompileOptions options = baseOptions;
  options.numThreads = request.numThreads;
  auto kernel = Compiler::compile(*candidate, options, error);
  if (!kernel) {
    result.failure = FailureKind::Compile;
    result.message = "compilation failed: " + error;
    return result;
  }
  result.lowerMs = kernel->lowerMs();
  result.jitMs = kernel->jitMs();
  std::vector<Buffer> outputs;
  if (!kernel->run(reference->inputs, outputs, error)) {
    result.failure = FailureKind::Crash;
    result.message = "execution failed: " + error;
    return result;
  }
  if (outputs.size() != reference->outputs.size()) {
    result.failure = FailureKind::WrongResult;
    result.message = "wrong result: the candidate returns a different number of outputs";
    return result;
  }
  result.correct = true;
  for (size_t i = 0; i < outputs.size(); ++i) {
    Comparison c = compareBuffers(outputs[i], reference->outputs[i]);
    result.maxAbsError = std::max(result.maxAbsError, c.maxAbsError);
    if (!c.equal && result.correct) {
      result.correct = false;
      result.failure = FailureKind::WrongResult;
      result.message = absl::StrCat("wrong result: output ", i, " ", c.detail);
    }
  }
  if (result.correct && request.time) result.timing = kernel->time(reference->inputs, request.timing);
  return result;
}

ExecResult InProcessExecutor::execute(const ExecRequest &request) {
  return executeHere(ctx_, references_, request, CompileOptions());
}

}  // namespace mlir_rl::runners
