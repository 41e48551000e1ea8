// Validation of user-supplied benchmarks (uploads). This code will be JIT-compiled and run, so nothing is accepted
// that is not plainly a Linalg-on-tensors kernel: an allow-list of dialects, static shapes, no external or
// recursive calls, and limits on size. TOSA input is first converted with MLIR's own TOSA-to-Linalg passes.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir_rl::env {

struct UploadLimits {
  size_t maxTextBytes = 8u << 20;             // 8 MiB of MLIR text
  int64_t maxOps = 20000;                      // operations in the module
  int64_t maxTensorBytes = int64_t{1} << 30;   // any single tensor value
  int64_t maxArgumentBytes = int64_t{2} << 30; // all kernel arguments together
};

// Parses `text` (diagnostics name `sourceName` with line and column), converts TOSA if present, and checks it.
// INVALID_ARGUMENT with the reason (and MLIR's diagnostic) on any violation; the result is the validated module.
absl::StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parseUpload(mlir::MLIRContext *ctx, const std::string &text,
                                                              const std::string &sourceName,
                                                              const UploadLimits &limits = {});

}  // namespace mlir_rl::env
