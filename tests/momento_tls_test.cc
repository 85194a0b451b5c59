// The Momento backend over HTTPS, against the loopback emulator serving certificates of a test CA
// (fixtures/tls_certs.h): MomentoBackendOptions::ca_bundle_path makes it trust that CA, and a
// wrong CA, a certificate for other names or an expired one is refused with a status naming the
// cause.

#include <catch2/catch.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "chunkcache/momento_backend.h"
#include "chunkcache/testing/catalogue.h"
#include "fixtures/momento_emulator.h"
#include "fixtures/tls_certs.h"

namespace chunkcache {
namespace {

using testing::MomentoEmulator;
using testing::TestCertificates;

constexpr char kApiKey[] = "tls-test-api-key-4b1d";

const TestCertificates& Certs() { return TestCertificates::Get(); }

// An emulator serving HTTPS with `cert` and `key` (signed by the test CA), which the fixture's own
// requests verify only when `valid` (see MomentoEmulatorOptions::tls_ca_file).
MomentoEmulator HttpsEmulator(const std::string& cert, const std::string& key, bool valid) {
  return MomentoEmulator({.api_key = kApiKey,
                          .tls_cert_file = cert,
                          .tls_key_file = key,
                          .tls_ca_file = valid ? Certs().ca : ""});
}

MomentoBackendOptions Options(const std::string& endpoint, const std::string& ca) {
  return {.endpoint = endpoint,
          .cache_name = "test-cache",
          .api_key = kApiKey,
          .max_attempts = 1,
          .ca_bundle_path = ca};
}

std::shared_ptr<MomentoBackend> Connect(const MomentoBackendOptions& options) {
  absl::StatusOr<std::shared_ptr<MomentoBackend>> backend = NewMomentoBackend(options);
  INFO(backend.status().ToString());
  REQUIRE(backend.ok());
  return *std::move(backend);
}

// The status of a MultiGet through a backend with `options`.
absl::Status GetStatus(const MomentoBackendOptions& options) {
  const std::vector<std::string_view> keys = {"k"};
  return Connect(options)->MultiGet(keys).status();
}

// Checks a refusal: not OK, naming `cause`, never the API key.
void CheckRefused(const absl::Status& status, const std::string& cause) {
  INFO(status.ToString());
  CHECK_FALSE(status.ok());
  CHECK_THAT(std::string(status.message()), Catch::Contains(cause, Catch::CaseSensitive::No));
  CHECK_THAT(status.ToString(), !Catch::Contains(kApiKey));
}

TEST_CASE("Momento over HTTPS: ca_bundle_path trusts the test CA; values round-trip") {
  MomentoEmulator emulator = HttpsEmulator(Certs().server_cert, Certs().server_key, true);
  const std::string port = std::to_string(emulator.port());
  // The certificate names localhost (DNS) and 127.0.0.1 (IP): both endpoints verify.
  for (const std::string& endpoint : {emulator.endpoint(), "https://127.0.0.1:" + port}) {
    INFO(endpoint);
    const std::shared_ptr<MomentoBackend> backend = Connect(Options(endpoint, Certs().ca));
    const std::string value = testing::GenerateCatalogue({.megabytes = 0.5, .seed = 7});
    const std::string key = "tls-" + endpoint;
    const std::vector<KeyValue> items = {{key, value}};
    const absl::Status set = backend->MultiSet(items, absl::Seconds(60));
    INFO(set.ToString());
    REQUIRE(set.ok());
    const std::vector<std::string_view> keys = {key, "absent"};
    absl::StatusOr<std::vector<std::optional<std::string>>> got = backend->MultiGet(keys);
    INFO(got.status().ToString());
    REQUIRE(got.ok());
    REQUIRE(got->size() == 2);
    CHECK((*got)[0] == value);
    CHECK_FALSE((*got)[1].has_value());
    CHECK(emulator.Item("test-cache", key) == value);
  }
}

TEST_CASE("Momento over HTTPS: a server certificate of another CA is refused") {
  MomentoEmulator emulator = HttpsEmulator(Certs().server_cert, Certs().server_key, true);
  CheckRefused(GetStatus(Options(emulator.endpoint(), Certs().other_ca)), "certificate");
  // The system's CA store doesn't know the test CA either.
  CheckRefused(GetStatus(Options(emulator.endpoint(), "")), "certificate");
  CHECK(emulator.Stats().requests == 0);  // nothing got through
}

TEST_CASE("Momento over HTTPS: a certificate for other names is refused") {
  MomentoEmulator emulator = HttpsEmulator(Certs().mismatch_cert, Certs().mismatch_key, false);
  CheckRefused(GetStatus(Options(emulator.endpoint(), Certs().ca)), "localhost");
  CHECK(emulator.Stats().requests == 0);
}

TEST_CASE("Momento over HTTPS: an expired certificate is refused") {
  MomentoEmulator emulator = HttpsEmulator(Certs().expired_cert, Certs().expired_key, false);
  CheckRefused(GetStatus(Options(emulator.endpoint(), Certs().ca)), "expired");
  CHECK(emulator.Stats().requests == 0);
}

}  // namespace
}  // namespace chunkcache
