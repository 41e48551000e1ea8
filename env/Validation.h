// Validation of user-supplied benchmarks (uploads). This code will be JIT-compiled and run, so nothing is accepted
// that is not plainly a Linalg-on-tensors kernel: an allow-list of dialects, static shapes, no external or
// recursive calls, function names that cannot collide with symbols the JIT resolves, indexing that stays inside its
// tensors, and limits on size. TOSA input is first converted with MLIR's own TOSA-to-Linalg passes.
//
// What an accepted module can do: read its arguments, compute with arith/math/linalg/tensor ops on statically
// shaped tensors, call functions it defines, and return tensors. Data-dependent indices (tensor.extract /
// tensor.insert at an index computed from input data, e.g. an embedding lookup) are clamped into the tensor's
// bounds, as XLA's gather does; data-dependent slice offsets are clamped the same way; dynamic slice sizes, strides,
// padding amounts, dimension indices and shape operands are refused. It cannot allocate beyond the tensor limits,
// name outside symbols, loop (no scf/cf), or reach memory outside its buffers.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "absl/status/statusor.h"
#include "llvm/ADT/ArrayRef.h"
#include "llvm/ADT/StringRef.h"
#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/OwningOpRef.h"

namespace mlir_rl::env {

struct UploadLimits {
  size_t maxTextBytes = 8u << 20;               // MLIR text (--max_upload_kb)
  int maxNesting = 64;                          // bracket nesting of the text (--max_upload_nesting)
  int64_t maxOps = 20000;                       // operations in the module (--max_upload_ops)
  int64_t maxTensorBytes = int64_t{1} << 30;    // any single tensor value (--max_tensor_mb)
  int64_t maxArgumentBytes = int64_t{2} << 30;  // all kernel arguments together (--max_argument_mb)
};

// Checks that need only the raw text (size, bracket nesting, no NUL bytes, structured-op properties), run before the
// parser sees it: MLIR's parser recurses once per nesting level, so deep nesting would overflow a thread's stack; and
// MLIR 19's Linalg parser casts the properties `<...>` written after a Linalg op's name (or linalg.generic's attribute
// dictionary) to a dictionary unchecked, so `linalg.fill <5> ins(...)` would crash the process (found by fuzz_upload).
absl::Status checkUploadText(std::string_view text, const UploadLimits &limits = {});

// The context uploads are parsed and validated in: only the allowed dialects (func, linalg, tensor, arith, math,
// tosa), those they depend on and those the TOSA conversion loads, all loaded up front. Operations of any other
// dialect are refused as "not allowed" without reaching that dialect's parser.
std::unique_ptr<mlir::MLIRContext> createUploadContext();

// Runs checkUploadText, parses `text` (diagnostics name `sourceName` with line and column), converts TOSA if present,
// checks the module and clamps its data-dependent indices. INVALID_ARGUMENT with the reason (and MLIR's diagnostic)
// on any violation; the result is the validated module.
absl::StatusOr<mlir::OwningOpRef<mlir::ModuleOp>> parseUpload(mlir::MLIRContext *ctx, const std::string &text,
                                                              const std::string &sourceName,
                                                              const UploadLimits &limits = {});

// Bytes of a statically shaped tensor of `shape` with `elementBits`-bit elements, or -1 when the product overflows
// int64 (or a dimension is negative/dynamic).
int64_t tensorBytes(llvm::ArrayRef<int64_t> shape, int64_t elementBits);

// Why a function name is refused (empty when it is acceptable): names must be plain identifiers that neither use a
// reserved prefix nor name a symbol the evaluation worker's JIT resolves from its libraries (C library, libm, the
// MLIR runtime, OpenMP): a kernel called @malloc would replace or clash with the allocator the lowering calls.
std::string functionNameBlocker(llvm::StringRef name);

}  // namespace mlir_rl::env
