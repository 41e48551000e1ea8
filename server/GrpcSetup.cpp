#include "server/GrpcSetup.h"

#include <algorithm>

#include "absl/synchronization/mutex.h"

namespace mlir_rl::server {

void configureGrpcProcess() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

void configureServerBuilder(grpc::ServerBuilder &builder, int maxThreads) {
  int minPollers = maxThreads > 0 ? std::min(2, maxThreads) : 2;
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, minPollers);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, std::max(minPollers, 4));
}

}  // namespace mlir_rl::server
