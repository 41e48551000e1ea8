#include "support/Affinity.h"

#include "support/Status.h"

#include <sched.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

namespace mlir_rl::support {

namespace {

bool parseNumber(const std::string &s, int &out) {
  if (s.empty() || s.size() > 6) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  out = std::atoi(s.c_str());
  return true;
}

}  // namespace

std::vector<int> allowedCpus() {
  std::vector<int> cpus;
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}

absl::StatusOr<std::vector<int>> parseCpuList(const std::string &text) {
  std::vector<int> cpus;
  const std::vector<int> allowed = allowedCpus();
  size_t start = 0;
  while (start <= text.size()) {
    size_t comma = text.find(',', start);
    std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    size_t dash = item.find('-');
    int first = 0, last = 0;
    bool ok = dash == std::string::npos ? parseNumber(item, first) && (last = first, true)
                                        : parseNumber(item.substr(0, dash), first) &&
                                              parseNumber(item.substr(dash + 1), last) && first <= last;
    if (!ok)
      return absl::InvalidArgumentError("'" + item + "' in CPU list '" + text +
                                        "' is not a CPU number or an ascending range (e.g. 0,2-3)");
    for (int c = first; c <= last; ++c) {
      if (std::find(allowed.begin(), allowed.end(), c) == allowed.end())
        return absl::InvalidArgumentError("CPU " + std::to_string(c) + " in CPU list '" + text +
                                          "' is not available to this process");
      cpus.push_back(c);
    }
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return cpus;
}

absl::Status pinCallingThread(const std::vector<int> &cpus) {
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int c : cpus) CPU_SET(c, &set);
  if (sched_setaffinity(0, sizeof(set), &set) != 0)
    return absl::InternalError(std::string("sched_setaffinity: ") + std::strerror(errno));
  return absl::OkStatus();
}

absl::Status pinCallingThreadTo(const std::string &cpuList) {
  MLIR_RL_ASSIGN_OR_RETURN(std::vector<int> cpus, parseCpuList(cpuList));
  return pinCallingThread(cpus);
}

}  // namespace mlir_rl::support
