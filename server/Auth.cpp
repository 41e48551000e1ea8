#include "server/Auth.h"

#include <fstream>
#include <sstream>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"

namespace mlir_rl::server {

namespace {

std::array<unsigned char, 32> sha256(absl::string_view text) {
  std::array<unsigned char, 32> digest{};
  SHA256(reinterpret_cast<const unsigned char *>(text.data()), text.size(), digest.data());
  return digest;
}

absl::StatusOr<std::string> readFile(const std::string &path, const char *what) {
  std::ifstream in(path);
  if (!in) return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// "ipv4:127.0.0.1:5555" -> "ipv4:127.0.0.1", "ipv6:[::1]:5555" -> "ipv6:[::1]".
std::string peerHost(const std::string &peer) {
  size_t colon = peer.rfind(':');
  size_t first = peer.find(':');
  return colon != std::string::npos && colon != first ? peer.substr(0, colon) : peer;
}

}  // namespace

absl::StatusOr<Authenticator> Authenticator::fromTokens(
    const std::vector<std::pair<std::string, std::string>> &tokens) {
  Authenticator a;
  for (const auto &[name, token] : tokens) {
    if (token.size() < 16)
      return absl::InvalidArgumentError(absl::StrCat("token '", name, "' is shorter than 16 characters"));
    a.tokens_.push_back({name, sha256(token)});
  }
  return a;
}

absl::StatusOr<Authenticator> Authenticator::fromFile(const std::string &path) {
  auto text = readFile(path, "tokens");
  if (!text.ok()) return text.status();
  std::vector<std::pair<std::string, std::string>> tokens;
  int line = 0;
  for (absl::string_view raw : absl::StrSplit(*text, '\n')) {
    ++line;
    absl::string_view l = absl::StripAsciiWhitespace(raw);
    if (l.empty() || l.front() == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(l, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() == 1)
      tokens.emplace_back(absl::StrCat("token-", line), std::string(fields[0]));
    else if (fields.size() == 2)
      tokens.emplace_back(std::string(fields[0]), std::string(fields[1]));
    else
      return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": expected '<name> <token>' or '<token>'"));
  }
  if (tokens.empty()) return absl::InvalidArgumentError(absl::StrCat(path, " holds no token"));
  return fromTokens(tokens);
}

absl::StatusOr<std::string> Authenticator::identify(const grpc::ServerContext &context) const {
  if (!tokens_.empty()) {
    auto it = context.client_metadata().find("authorization");
    if (it == context.client_metadata().end())
      return absl::UnauthenticatedError(
          "this server requires a token: send the metadata 'authorization: Bearer <token>'");
    absl::string_view value(it->second.data(), it->second.size());
    if (!absl::ConsumePrefix(&value, "Bearer ") && !absl::ConsumePrefix(&value, "bearer "))
      return absl::UnauthenticatedError("the 'authorization' metadata must read 'Bearer <token>'");
    std::array<unsigned char, 32> presented = sha256(value);
    const Token *match = nullptr;
    for (const Token &t : tokens_)  // every token is compared, so the time does not depend on which one matches
      if (CRYPTO_memcmp(presented.data(), t.digest.data(), presented.size()) == 0) match = &t;
    if (!match) return absl::UnauthenticatedError("the bearer token is not one this server accepts");
    return match->name;
  }
  std::shared_ptr<const grpc::AuthContext> auth = context.auth_context();
  if (auth && auth->IsPeerAuthenticated()) {
    std::vector<grpc::string_ref> names = auth->GetPeerIdentity();
    if (!names.empty()) return "cert:" + std::string(names.front().data(), names.front().size());
  }
  return peerHost(context.peer());
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> tlsCredentials(const std::string &certFile,
                                                                        const std::string &keyFile,
                                                                        const std::string &clientCaFile) {
  auto cert = readFile(certFile, "TLS certificate");
  if (!cert.ok()) return cert.status();
  auto key = readFile(keyFile, "TLS key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_key_cert_pairs.push_back({*key, *cert});
  if (!clientCaFile.empty()) {
    auto ca = readFile(clientCaFile, "client CA");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  return grpc::SslServerCredentials(options);
}

}  // namespace mlir_rl::server
