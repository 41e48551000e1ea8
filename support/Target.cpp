#include "support/Target.h"

#include "llvm/ADT/StringMap.h"
#include "llvm/TargetParser/Host.h"

namespace mlir_rl::support {

int64_t nativeVectorBytes() {
  static const int64_t bytes = [] {
    llvm::StringMap<bool> features = llvm::sys::getHostCPUFeatures();
    if (features.lookup("avx512f")) return int64_t{64};
    if (features.lookup("avx2") || features.lookup("avx")) return int64_t{32};
    return int64_t{16};
  }();
  return bytes;
}

std::string hostCpuName() { return llvm::sys::getHostCPUName().str(); }

}  // namespace mlir_rl::support
