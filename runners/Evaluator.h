// Evaluator: lower → JIT → run → time → compare with the reference output.
//
// The evaluator runs candidates in the calling process (worker-process isolation is the next step; see
// docs/architecture.md). Timed repetitions of different evaluations never overlap: a process-wide measurement
// slot serializes them, while lowering and JIT compilation run concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "mlir/IR/BuiltinOps.h"

#include "runners/Buffers.h"

namespace mlir {
class ExecutionEngine;
}
#include "absl/status/statusor.h"

namespace llvm {
class Error;
class Module;
class TargetMachine;
}  // namespace llvm

namespace mlir_rl::runners {

// The kernel's calling signature: statically shaped tensor arguments in, tensor results out.
struct KernelSignature {
  std::string name;
  std::vector<TensorSpec> args;
  std::vector<TensorSpec> results;
};

// Finds the kernel: the single public func.func of the module. INVALID_ARGUMENT (with a reason) on dynamic shapes,
// non-tensor arguments or unsupported element types.
absl::StatusOr<KernelSignature> analyzeKernel(mlir::ModuleOp module);

// The shared libraries the JIT links kernels against (MLIR's C runner utilities, the OpenMP runtime).
const std::vector<std::string> &jitSharedLibraries();

struct TimingOptions {
  int minRepetitions = 5;          // timed samples at least
  int maxRepetitions = 50;         // and at most
  double targetSpread = 0.02;      // stop once (p75 - p25) / median is below this
  double budgetSeconds = 2.0;      // or once this much time was spent measuring (after minRepetitions)
  double minSampleSeconds = 1e-3;  // short kernels run several times per sample
  // Racing against the reference (0: off): once minRepetitions samples are in, a candidate whose 25th percentile is
  // above raceFactor x raceAgainstNs is clearly slower than the reference and timing stops there, whatever the
  // spread. Its reward is still log10(reference / median) of those samples; what the spread target buys is precision
  // near the reference and above it, where schedules are compared.
  double raceAgainstNs = 0;
  double raceFactor = 0;
  // A kernel whose run lasts longSampleSeconds is stable run to run and costly to sample: a run just made on the same
  // inputs is its warm-up (CompiledKernel::time's warmedSeconds), and racing may stop it after raceMinRepetitions.
  int raceMinRepetitions = 2;
  double longSampleSeconds = 0.01;
  // Seconds the timing may last from its start (0: no limit). A sample that would end past it is not taken: a kernel
  // that slow is reported with the samples it has, or with the warmed run alone, as raced, instead of being stopped
  // as a time-out. The executor sets it from the request's time-out (what is left of it, less a margin).
  double deadlineSeconds = 0;
};

struct Timing {
  double medianNs = 0, minNs = 0, spread = 0;
  int repetitions = 0;
  // Stopped early: clearly slower than the reference (TimingOptions::raceFactor), or cut by
  // TimingOptions::deadlineSeconds (repetitions then counts the samples taken; 1 with the warmed run alone).
  bool raced = false;
};

class CompiledKernel {
 public:
  ~CompiledKernel();
  const KernelSignature &signature() const { return signature_; }
  double lowerMs() const { return lowerMs_; }
  double jitMs() const { return jitMs_; }

  // Runs once on `inputs` and returns the outputs; `seconds` (optional) receives the kernel call's duration.
  std::vector<Buffer> run(const std::vector<Buffer> &inputs, double *seconds = nullptr) const;
  // Runs repeatedly (first run discarded as warm-up) and reports the time per run. `warmedSeconds`: the duration of
  // a run just made on the same inputs; at least TimingOptions::longSampleSeconds, it replaces the warm-up run.
  Timing time(const std::vector<Buffer> &inputs, const TimingOptions &options, double warmedSeconds = 0) const;

 private:
  friend class Compiler;
  CompiledKernel() = default;
  void invoke(const std::vector<Buffer> &inputs, std::vector<std::vector<int64_t>> &resultDescriptors) const;
  void releaseResults(const std::vector<Buffer> &inputs, std::vector<std::vector<int64_t>> &descriptors) const;

  KernelSignature signature_;
  std::unique_ptr<mlir::ExecutionEngine> engine_;
  void (*entry_)(void **) = nullptr;
  double lowerMs_ = 0, jitMs_ = 0;
};

// LLVM's part of compilation: the mid-level pipeline (PassBuilder's per-module default pipeline at `optLevel`, with
// PipelineTuningOptions) and the code generator's level.
struct LlvmOptions {
  int optLevel = 3;      // 0-3
  int codegenLevel = 3;  // 0-3 (llvm::CodeGenOptLevel None/Less/Default/Aggressive)
  bool loopVectorization = true;
  bool slpVectorization = true;
  bool loopUnrolling = true;
  bool loopInterleaving = true;
};

struct CompileOptions {
  int numThreads = 1;
  LlvmOptions llvm;
  // The kernel's pointer arguments are noalias (LoweringOptions::noaliasKernel): the runner passes distinct,
  // read-only input buffers. Without it LLVM versions loops with run-time alias checks (measured on 134 eval-split
  // kernels: run time -6 % geomean, compile slightly faster).
  bool noaliasArguments = true;
  // Worker processes only: a failed heap allocation in the kernel ends the process with kOutOfMemoryExitCode
  // and a message on stderr, instead of a null pointer the kernel would write through.
  bool exitOnAllocationFailure = false;
};

inline constexpr int kOutOfMemoryExitCode = 3;

class Compiler {
 public:
  // Lowers a clone of `module` and JIT-compiles it at O3 for the host CPU. `module` is left untouched.
  // INVALID_ARGUMENT when the kernel's signature is unsupported or lowering / code generation fails (MLIR's and
  // LLVM's diagnostics in the message); INTERNAL when the host target cannot be set up.
  static absl::StatusOr<std::unique_ptr<CompiledKernel>> compile(mlir::ModuleOp module, const CompileOptions &options);
};

// The LLVM IR optimizer for ExecutionEngineOptions::transformer. `targetMachine` must outlive it.
std::function<llvm::Error(llvm::Module *)> makeLlvmOptimizer(const LlvmOptions &options,
                                                             llvm::TargetMachine *targetMachine);

// Inputs for `signature`, argument i filled from hash(seed, i).
std::vector<Buffer> makeInputs(const KernelSignature &signature, uint64_t seed);

}  // namespace mlir_rl::runners
