// Upload validation on arbitrary text: the raw-text checks, parsing, TOSA conversion, the allow-list, index
// clamping and the kernel analysis must answer every input with a module or an error, never a crash.
#include <cstddef>
#include <cstdint>

#include "tests/fuzz/FuzzSupport.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static int runs = 0;
  // Uniqued attributes live as long as their context: a fresh one now and then keeps memory flat.
  static std::unique_ptr<mlir::MLIRContext> ctx;
  if (!ctx || ++runs % 2000 == 0) ctx = mlir_rl::env::createUploadContext();
  std::string text(reinterpret_cast<const char *>(data), size);
  auto module = mlir_rl::env::parseUpload(ctx.get(), text, "upload");
  if (module.ok()) (void)mlir_rl::env::Benchmark::fromModule(std::move(*module), "benchmark://user/fuzz", "");
  return 0;
}
