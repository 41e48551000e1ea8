// The one MLIRContext mlir-rl uses: every dialect, extension, pass and LLVM translation registered and loaded up
// front (loading lazily from several threads at once is not safe), plus the per-thread diagnostic forwarding.
#pragma once

#include <memory>

namespace mlir {
class DialectRegistry;
class MLIRContext;
}  // namespace mlir

namespace mlir_rl::support {

std::unique_ptr<mlir::MLIRContext> createContext();

// The same with only the dialects of `dialects` (and those they depend on) loaded, for parsing untrusted text: a
// dialect that is not loaded cannot be reached by a parser bug.
std::unique_ptr<mlir::MLIRContext> createContext(const mlir::DialectRegistry &dialects);

// Initializes LLVM's native target (needed once per process before JIT compilation). Idempotent.
void initializeNativeTarget();

}  // namespace mlir_rl::support
