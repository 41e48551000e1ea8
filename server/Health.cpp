#include "server/Health.h"

namespace mlir_rl::server {

grpc::ServerUnaryReactor *HealthService::Check(grpc::CallbackServerContext *context,
                                               const grpc::health::v1::HealthCheckRequest *request,
                                               grpc::health::v1::HealthCheckResponse *reply) {
  grpc::ServerUnaryReactor *reactor = context->DefaultReactor();
  if (!request->service().empty() && request->service() != serviceName_) {
    // The protocol's answer for a service the server does not know.
    reactor->Finish(grpc::Status(grpc::StatusCode::NOT_FOUND, "unknown service '" + request->service() + "'"));
    return reactor;
  }
  reply->set_status(serving_ ? grpc::health::v1::HealthCheckResponse::SERVING
                             : grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace mlir_rl::server
