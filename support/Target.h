// Facts about the host CPU that code generation and the action masks depend on.
#pragma once

#include <cstdint>
#include <string>

namespace mlir_rl::support {

// Width in bytes of the widest vector register the host supports (64 with AVX-512, 32 with AVX2, else 16).
int64_t nativeVectorBytes();

// LLVM's name for the host CPU (e.g. "znver4"), computed once per process.
std::string hostCpuName();

// What makes measurements comparable: CPU model, LLVM CPU name, usable CPUs, vector width, LLVM version.
std::string machineIdentity();

}  // namespace mlir_rl::support
