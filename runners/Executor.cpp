#include "runners/Executor.h"

#include <algorithm>
#include <chrono>

#include "llvm/Support/xxhash.h"
#include "support/Status.h"

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

absl::StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parse(mlir::MLIRContext *ctx, const std::string &text) {
  support::DiagnosticCapture capture;
  auto module = mlir::parseSourceString<mlir::ModuleOp>(text, ctx);
  if (!module) return absl::InvalidArgumentError("does not parse: " + capture.take());
  return module;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ReferenceCache::Entry>> ReferenceCache::get(mlir::MLIRContext *ctx,
                                                                                 const std::string &referenceIR,
                                                                                 uint64_t seed, int numThreads) {
  std::string key = absl::StrCat(llvm::xxh3_64bits(referenceIR), ":", referenceIR.size(), ":", seed, ":", numThreads);
  std::lock_guard<std::mutex> lock(mutex_);  // one computation at a time; references are computed once
  auto it = entries_.find(key);
  if (it != entries_.end()) return it->second;
  MLIR_RL_ASSIGN_OR_RETURN(mlir::OwningOpRef<mlir::ModuleOp> module, parse(ctx, referenceIR));
  CompileOptions options;
  options.numThreads = numThreads;
  MLIR_RL_ASSIGN_OR_RETURN(std::unique_ptr<CompiledKernel> kernel, Compiler::compile(*module, options));
  auto entry = std::make_shared<Entry>();
  entry->inputs = makeInputs(kernel->signature(), seed);
  entry->outputs = kernel->run(entry->inputs);
  entries_.emplace(key, entry);
  return entry;
}

ExecResult executeHere(mlir::MLIRContext *ctx, ReferenceCache &references, const ExecRequest &request,
                       const CompileOptions &baseOptions) {
  auto started = std::chrono::steady_clock::now();
  ExecResult result;
  auto reference = references.get(ctx, request.referenceIR, request.seed, request.numThreads);
  if (!reference.ok()) {
    // The benchmark itself does not compile: reproducible (remembered as the reference's failure).
    result.failure = FailureKind::Compile;
    result.message = absl::StrCat("the reference does not compile: ", reference.status().message());
    return result;
  }
  auto candidate = parse(ctx, request.candidateIR);
  if (!candidate.ok()) {
    result.failure = FailureKind::Internal;
    result.message = absl::StrCat("the candidate ", candidate.status().message());
    return result;
  }
  CompileOptions options = baseOptions;
  options.numThreads = request.numThreads;
  auto kernel = Compiler::compile(**candidate, options);
  if (!kernel.ok()) {
    result.failure = FailureKind::Compile;
    result.message = absl::StrCat("compilation failed: ", kernel.status().message());
    return result;
  }
  result.lowerMs = (*kernel)->lowerMs();
  result.jitMs = (*kernel)->jitMs();
  double checkedSeconds = 0;
  std::vector<Buffer> outputs = (*kernel)->run((*reference)->inputs, &checkedSeconds);
  if (outputs.size() != (*reference)->outputs.size()) {
    result.failure = FailureKind::WrongResult;
    result.message = "wrong result: the candidate returns a different number of outputs";
    return result;
  }
  result.correct = true;
  for (size_t i = 0; i < outputs.size(); ++i) {
    Comparison c = compareBuffers(outputs[i], (*reference)->outputs[i]);
    result.maxAbsError = std::max(result.maxAbsError, c.maxAbsError);
    if (!c.equal && result.correct) {
      result.correct = false;
      result.failure = FailureKind::WrongResult;
      result.message = absl::StrCat("wrong result: output ", i, " ", c.detail);
    }
  }
  if (result.correct && request.time) {
    TimingOptions timing = request.timing;
    if (request.timeoutSeconds > 0 && timing.deadlineSeconds <= 0) {
      // What is left of the request's time-out, less a margin for the exchange with the caller (which stops the
      // worker at the time-out): a slow candidate is measured with fewer samples rather than lost as a time-out.
      double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      timing.deadlineSeconds = std::max(1e-3, 0.85 * request.timeoutSeconds - spent);
    }
    result.timing = (*kernel)->time((*reference)->inputs, timing, checkedSeconds);
  }
  return result;
}

ExecResult InProcessExecutor::execute(const ExecRequest &request) {
  return executeHere(ctx_, references_, request, CompileOptions());
}

}  // namespace mlir_rl::runners
