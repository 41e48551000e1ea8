// CPU affinity of the calling thread (threads it creates later inherit it).
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mlir_rl::support {

// The CPUs this process may run on (never empty).
std::vector<int> allowedCpus();

// Parses a CPU list such as "0", "0,2" or "0-3,6" (the format of taskset -c and /proc/*/status). INVALID_ARGUMENT
// saying why for anything else: empty items, bad numbers, reversed ranges, CPUs this process may not use.
absl::StatusOr<std::vector<int>> parseCpuList(const std::string &text);

// Restricts the calling thread to `cpus` (INTERNAL with errno's message on failure).
absl::Status pinCallingThread(const std::vector<int> &cpus);

// parseCpuList, then pinCallingThread: what --rpc_cpus, mlir-rl-perf --cpus and the runner's --cpus do.
absl::Status pinCallingThreadTo(const std::string &cpuList);

}  // namespace mlir_rl::support
