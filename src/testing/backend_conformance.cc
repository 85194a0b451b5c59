#include "chunkcache/testing/backend_conformance.h"

namespace chunkcache::testing {

absl::Status CheckBackendConformance(const std::function<std::shared_ptr<Backend>()>&,
                                     const ConformanceOptions&) {
  return absl::UnimplementedError("backend conformance: not written yet");
}

std::vector<std::string_view> ConformanceCheckNames() { return {}; }

}  // namespace chunkcache::testing
