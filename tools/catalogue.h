// catalogue.h — the project's generator of a video-on-demand programme catalogue.
//
// A deterministic stand-in for the seed's ~10 MB GraphQL response, shaped like
// shared/tools/gen_catalogue.py (same fields, same kinds of text), so examples, tests and
// benchmarks have the reference workload without the shared folder:
//   {"data":{"listPrograms":{"items":[Program...],"nextToken":null}}}
//   Program -> episodeGroups[] -> episodes[], with Japanese and ASCII text, UUIDs, timestamps,
//   image and HLS URLs and tags, in compact UTF-8 JSON.

#ifndef CHUNKCACHE_TOOLS_CATALOGUE_H_
#define CHUNKCACHE_TOOLS_CATALOGUE_H_

#include <cstdint>
#include <string>

namespace chunkcache::catalogue {

struct CatalogueOptions {
  // Approximate size of the output in MiB; programs are added until it is reached.
  // Default: 10.
  double megabytes = 10.0;
  // Seed of the pseudo-random generator: same options, same bytes.
  // Default: 20230830.
  std::uint64_t seed = 20230830;
};

// Returns the catalogue JSON text. Thread-safe (no shared state).
std::string GenerateCatalogue(const CatalogueOptions& options = {});

}  // namespace chunkcache::catalogue

#endif  // CHUNKCACHE_TOOLS_CATALOGUE_H_
