// gRPC settings shared by mlir-rl-server and the perf program, so the figures measure the server as shipped.
#pragma once

#include <grpcpp/server_builder.h>

namespace mlir_rl::server {

// Process-wide settings; call once, before any gRPC object exists.
// Debian's Abseil is built without NDEBUG, so every absl::Mutex that gRPC locks also updates a lock-order graph for
// deadlock detection; that bookkeeping is turned off here (our own code uses std::mutex).
void configureGrpcProcess();

// Settings of the synchronous server: at least two threads polling for calls and at most four idle ones. With
// gRPC's default (one poller), the thread that picks up a call starts a replacement poller, and the extra thread
// exits again shortly after: hundreds of threads created per second under a stepping agent, each paying its
// thread start-up and cold thread-local caches. `maxThreads` > 0: the server's thread limit (--threads), which the
// pollers must fit in.
void configureServerBuilder(grpc::ServerBuilder &builder, int maxThreads = 0);

}  // namespace mlir_rl::server
