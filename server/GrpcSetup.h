// gRPC process settings shared by mlir-rl-server and the perf client.
#pragma once

namespace mlir_rl::server {

// Call once, before any gRPC object exists. Debian's Abseil is built without NDEBUG, so every absl::Mutex that gRPC
// locks would also update a lock-order graph for deadlock detection; that bookkeeping is turned off (our own code
// uses std::mutex).
void configureGrpcProcess();

}  // namespace mlir_rl::server
