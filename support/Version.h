// The version mlir-rl reports: in GetVersion replies and in every executable's --version.
#pragma once

#include <string>
#include <string_view>

namespace mlir_rl::support {

// mlir-rl's own version (the CMake project version).
const char *mlirRlVersion();
// The gRPC protocol's version (the proto package, mlir_rl.v1).
constexpr const char *kProtocolVersion = "v1";
// One line: program name, mlir-rl version, protocol, the MLIR/LLVM it was built against, and the build type.
std::string versionLine(std::string_view program);
// Makes --version print versionLine(program) (instead of Abseil's default, which describes Abseil's own build).
// Call before absl::ParseCommandLine.
void installVersionFlag(std::string_view program);

}  // namespace mlir_rl::support
