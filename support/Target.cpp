#include "support/Target.h"

#include <fstream>

#include "llvm/ADT/StringMap.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/TargetParser/Host.h"

#include "support/Affinity.h"

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

std::string hostCpuName() {
  // Computed once: LLVM asks the CPU (cpuid) on every call, and each cpuid is a trap to the hypervisor on a VM
  // (tens of microseconds per call here), which GetVersion used to pay on every RPC.
  static const std::string name = llvm::sys::getHostCPUName().str();
  return name;
}

std::string machineIdentity() {
  std::string model = "unknown";
  std::ifstream cpuinfo("/proc/cpuinfo");
  for (std::string line; std::getline(cpuinfo, line);)
    if (line.rfind("model name", 0) == 0) {
      model = line.substr(line.find(':') + 1);
      break;
    }
  return model + "|" + hostCpuName() + "|" + std::to_string(allowedCpus().size()) + "|" +
         std::to_string(nativeVectorBytes()) + "|" + LLVM_VERSION_STRING;
}

}  // namespace mlir_rl::support
