// The error convention (issue 15): absl::Status / absl::StatusOr across env, server and runners (transforms report
// MLIR diagnostics through LogicalResult / FailureOr, captured with support::DiagnosticCapture), and these two helpers
// instead of the same three lines at every call.
#pragma once

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// Returns the status of `expr` from the enclosing function when it is not OK.
#define MLIR_RL_RETURN_IF_ERROR(expr)                                                         \
  do {                                                                                        \
    if (absl::Status mlir_rl_status_ = (expr); !mlir_rl_status_.ok()) return mlir_rl_status_; \
  } while (false)

// `lhs = value of expr` (a StatusOr), or returns its status from the enclosing function when it is not OK.
#define MLIR_RL_ASSIGN_OR_RETURN(lhs, expr) \
  MLIR_RL_ASSIGN_OR_RETURN_IMPL_(MLIR_RL_STATUS_CONCAT_(mlir_rl_statusor_, __LINE__), lhs, expr)

#define MLIR_RL_STATUS_CONCAT_INNER_(a, b) a##b
#define MLIR_RL_STATUS_CONCAT_(a, b) MLIR_RL_STATUS_CONCAT_INNER_(a, b)
#define MLIR_RL_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                   \
  if (!statusor.ok()) return std::move(statusor).status();  \
  lhs = std::move(*statusor)
