// Lowering of a (transformed) payload module to the LLVM dialect, ready for the JIT.
//
// Order: bufferization (one-shot, function boundaries, identity layouts; kernel arguments are read-only) →
// deallocation → hoisting of loop-invariant vector transfers → vector lowering to 1-D register-width operations →
// remaining linalg to loops → scf.forall to OpenMP → everything to LLVM.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/Support/LogicalResult.h"

namespace mlir_rl::runners {

struct LoweringOptions {
  int numThreads = 1;        // OpenMP threads for parallel loops (0: the OpenMP runtime's default)
  bool printTiming = false;  // MLIR pass timing of each pipeline on stderr (tools only)
  // When set, the kernel's pointer arguments are marked llvm.noalias: the runner passes distinct, read-only input
  // buffers, and without it LLVM versions loops with run-time alias checks.
  std::string noaliasKernel;
};

// Marks `kernel` for the C interface and its arguments read-only. Call before lowerToLLVM.
absl::Status prepareKernel(mlir::ModuleOp module, llvm::StringRef kernel);

// Lowers `module` in place. INVALID_ARGUMENT with MLIR's diagnostics when a stage fails.
absl::Status lowerToLLVM(mlir::ModuleOp module, const LoweringOptions &options);

}  // namespace mlir_rl::runners
