// grpc.health.v1.Health/Check as a synchronous service like the environment's. gRPC's default health service runs
// on the callback API, whose extra polling threads pick up the environment's calls and hand them over, costing tens
// of microseconds on every call here.
#pragma once

#include <atomic>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"

namespace mlir_rl::server {

class HealthService final : public grpc::health::v1::Health::Service {
 public:
  // `serviceName`: the one named service reported besides the server as a whole ("").
  explicit HealthService(std::string serviceName) : serviceName_(std::move(serviceName)) {}
  grpc::Status Check(grpc::ServerContext *context, const grpc::health::v1::HealthCheckRequest *request,
                     grpc::health::v1::HealthCheckResponse *reply) override;
  // From now on every check answers NOT_SERVING (called when shutdown starts).
  void setNotServing() { serving_ = false; }

 private:
  std::string serviceName_;
  std::atomic<bool> serving_{true};
};

}  // namespace mlir_rl::server
