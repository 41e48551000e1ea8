#include "server/GrpcSetup.h"

#include "absl/synchronization/mutex.h"

namespace mlir_rl::server {

void configureGrpcProcess() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

}  // namespace mlir_rl::server
