// Translation between the protocol (mlir_rl.v1) and env types. The only place both kinds of types meet.
#pragma once

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mlir_rl/v1/env.pb.h"

#include "env/Benchmark.h"
#include "env/Config.h"
#include "env/Session.h"
#include "server/SessionRegistry.h"

namespace mlir_rl::server {

grpc::Status toGrpc(const absl::Status &status);

// Options → config, validated (INVALID_ARGUMENT naming the field).
absl::StatusOr<env::SessionConfig> toConfig(const v1::SessionOptions &options);

void fillSpaces(const env::SessionConfig &config, v1::GetSpacesReply &reply);
void fillBenchmarkInfo(const env::BenchmarkInfo &info, v1::BenchmarkInfo &out);
void fillEvaluation(const env::EvaluationRecord &record, v1::Evaluation &out);
void fillOutcome(const env::StepResult &result, v1::StepOutcome &out);
void fillEpisodeInfo(const env::EpisodeStatus &status, v1::EpisodeInfo &out);

// The observation a request asks for, numbered and recorded in `log` (the session's): only the tensors that changed
// since observation `request.since` when that is the last one sent and no names are asked for. INVALID_ARGUMENT for
// an unknown tensor name.
absl::Status fillObservation(const env::Session &session, const v1::ObservationRequest &request, ObservationLog &log,
                             v1::Observation &out);

std::vector<int64_t> toValues(const v1::Action &action);

}  // namespace mlir_rl::server
