#include "support/Version.h"

#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
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
  // --help lists the flags of mlir-rl's own files (Abseil's default looks for a file named after the program, and
  // found none: "No flags matched").
  config.contains_help_flags = [](absl::string_view file) { return !absl::StrContains(file, "absl/"); };
  config.contains_helpshort_flags = config.contains_help_flags;
  absl::SetFlagsUsageConfig(config);
}

}  // namespace mlir_rl::support
