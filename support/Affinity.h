// CPU affinity of the calling thread (threads it creates later inherit it).
#pragma once

#include <string>
#include <vector>

namespace mlir_rl::support {

// The CPUs this process may run on (never empty).
std::vector<int> allowedCpus();

// Parses a CPU list such as "0", "0,2" or "0-3,6" (the format of taskset -c and /proc/*/status). Returns false and
// says why in `error` for anything else: empty items, bad numbers, reversed ranges, CPUs this process may not use.
bool parseCpuList(const std::string &text, std::vector<int> &cpus, std::string &error);

// Restricts the calling thread to `cpus`; false with errno's message in `error` on failure.
bool pinCallingThread(const std::vector<int> &cpus, std::string &error);

// parseCpuList, then pinCallingThread: what --rpc_cpus, mlir-rl-perf --cpus and the runner's --cpus do.
bool pinCallingThreadTo(const std::string &cpuList, std::string &error);

}  // namespace mlir_rl::support
