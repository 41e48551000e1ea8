#include "support/Version.h"

#include "absl/flags/usage_config.h"
#include "llvm/Config/llvm-config.h"

namespace mlir_rl::support {

const char *mlirRlVersion() { return MLIR_RL_VERSION; }

std::string versionLine(std::string_view program) {
#ifdef NDEBUG
  constexpr const char *kBuild = "release build";
#else
  constexpr const char *kBuild = "build with assertions";
#endif
  std::string line(program);
  line += " " MLIR_RL_VERSION " (protocol ";
  line += kProtocolVersion;
  line += ", MLIR/LLVM " LLVM_VERSION_STRING ", ";
  line += kBuild;
  return line + ")";
}

void installVersionFlag(std::string_view program) {
  absl::FlagsUsageConfig config;
  std::string line = versionLine(program);
  config.version_string = [line] { return line + "\n"; };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace mlir_rl::support
