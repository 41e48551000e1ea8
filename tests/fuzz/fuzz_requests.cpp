// Every request handler on arbitrary serialized protos, through the service's own dispatch (gate, parsing,
// handler, reply), without the transport: whatever the bytes, a status (with a message when not OK), never a crash.
// The first byte picks the method; the rest is the request. Sessions and uploads accumulate across inputs, as on
// a long-running server, within small limits.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "server/Service.h"
#include "tests/fuzz/FuzzSupport.h"

using namespace mlir_rl;

namespace {

server::EnvService &service() {
  static server::EnvService *s = [] {
    fuzz::World &world = fuzz::World::get();
    world.benchmarks.maxUploads = 64;
    server::ServiceLimits limits;
    limits.sessions.maxSessions = 64;
    limits.sessions.maxPerClient = 64;
    limits.sessions.evictableAfter = std::chrono::seconds(0);
    limits.maxActionsPerStep = 64;
    limits.logInterval = std::chrono::seconds(0);
    return new server::EnvService(&world.benchmarks, &world.evaluator, limits);  // leaked with the world
  }();
  return *s;
}

const char *const kMethods[] = {"GetVersion",     "GetSpaces",    "ListBenchmarks", "Reset",      "Step",
                                "StepMany",       "Observe",      "Fork",           "EndSession", "Close",
                                "ExportSchedule", "AddBenchmark", "GetMetrics"};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz::Bytes in(data, size);
  const char *method = kMethods[in.below(std::size(kMethods))];

  std::string reply;
  grpc::Status status = service().callForTesting(method, in.rest(), reply);
  if (!status.ok() && status.error_message().empty()) std::abort();  // every refusal says what was wrong
  return 0;
}
