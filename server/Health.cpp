#include "server/Health.h"

namespace mlir_rl::server {

grpc::Status HealthService::Check(grpc::ServerContext *, const grpc::health::v1::HealthCheckRequest *request,
                                  grpc::health::v1::HealthCheckResponse *reply) {
  if (!request->service().empty() && request->service() != serviceName_)
    return grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'");  // per protocol
  reply->set_status(serving_ ? grpc::health::v1::HealthCheckResponse::SERVING
                             : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  return grpc::Status::OK;
}

}  // namespace mlir_rl::server
