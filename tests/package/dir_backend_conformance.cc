// Runs chunkcache's Backend conformance kit (chunkcache::testing) on the consumer's own
// DirectoryBackend, each check on a fresh directory. Exits 1 on a violation, printing it.
#include <chunkcache/testing/backend_conformance.h>
#include <stdlib.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "dir_backend.h"

int main() {
  char dir_template[] = "/tmp/dir_backend_conformance.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return 1;
  const std::filesystem::path dir = dir_template;
  int made = 0;
  const absl::Status conformance = chunkcache::testing::CheckBackendConformance(
      [&]() -> std::shared_ptr<chunkcache::Backend> {
        auto backend = DirectoryBackend::Open(dir / std::to_string(++made), 1 << 20);
        return backend.ok() ? *backend : nullptr;
      },
      {.supports_set_if_absent = false,
       .short_ttl = absl::Milliseconds(200),
       .catalogue_megabytes = 2});
  std::filesystem::remove_all(dir);
  if (!conformance.ok()) {
    std::fprintf(stderr, "DirectoryBackend: %s\n", conformance.ToString().c_str());
    return 1;
  }
  std::printf("DirectoryBackend keeps the Backend contract (%d fresh backends)\n", made);
  return 0;
}
