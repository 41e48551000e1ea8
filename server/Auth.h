// Who a call comes from, and whether it may be served.
//
// With bearer tokens configured (--auth_tokens_file), every call to mlir_rl.v1.MlirRlEnv must carry the metadata
// `authorization: Bearer <token>` naming one of them, else UNAUTHENTICATED; tokens are compared by their SHA-256
// digests with OpenSSL's constant-time CRYPTO_memcmp against every configured token, so timing reveals nothing of
// them. The health service stays open (orchestrators probe it without credentials).
//
// A client's identity (for per-client quotas and logs) is the name of its token, else the subject of its verified
// TLS client certificate, else its address without the port.
#pragma once

#include <array>
#include <string>
#include <vector>

#include <grpcpp/grpcpp.h>

#include "absl/status/statusor.h"

namespace mlir_rl::server {

class Authenticator {
 public:
  Authenticator() = default;  // no tokens: every call is admitted
  // A file of lines `<name> <token>` (or just `<token>`, named token-<line>); blank lines and `#` comments are
  // skipped. Tokens must be at least 16 characters.
  static absl::StatusOr<Authenticator> fromFile(const std::string &path);
  static absl::StatusOr<Authenticator> fromTokens(const std::vector<std::pair<std::string, std::string>> &tokens);

  bool requiresToken() const { return !tokens_.empty(); }
  // The caller's identity, or UNAUTHENTICATED saying what is missing or wrong.
  absl::StatusOr<std::string> identify(const grpc::ServerContext &context) const;

 private:
  struct Token {
    std::string name;
    std::array<unsigned char, 32> digest;
  };
  std::vector<Token> tokens_;
};

// The server's TLS credentials from PEM files: its certificate chain and key, and optionally the CA that client
// certificates must be signed by (then clients must present one).
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tlsCredentials(const std::string &certFile,
                                                                        const std::string &keyFile,
                                                                        const std::string &clientCaFile);

}  // namespace mlir_rl::server
