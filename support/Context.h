// The one MLIRContext mlir-rl uses: every dialect, extension, pass and LLVM translation registered and loaded up
// front (loading lazily from several threads at once is not safe), plus the per-thread diagnostic forwarding.
#pragma once

#include <memory>

namespace mlir {
class MLIRContext;
}

namespace mlir_rl::support {

std::unique_ptr<mlir::MLIRContext> createContext();

// Initializes LLVM's native target (needed once per process before JIT compilation). Idempotent.
void initializeNativeTarget();

}  // namespace mlir_rl::support
