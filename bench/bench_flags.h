// Command-line flags of the benchmarks and the load generator: absl flags, typed (a duration is an
// absl::Duration written "300ms", "2s"; a boolean is --name or --noname), defined with ABSL_FLAG in
// each binary's source, and one --help for all of them.
//
//   ABSL_FLAG(std::string, redis_url, "", "The Redis to measure; empty: a private redis-server.");
//
//   int main(int argc, char** argv) {
//     chunkcache::bench::InitBenchmarkAndFlags(argc, argv, kUsage);  // a Google Benchmark binary
//     const std::string json = chunkcache::bench::FlagSizedCatalogue();
//
// --help (or -h) prints "<program>: <usage>", then every flag defined in bench/ with its default
// and its help, sorted by name (and, for a Google Benchmark binary, Google Benchmark's flags), and
// exits with status 0. A flag nobody defines, or a value that does not parse, is reported on stderr
// by absl, which exits with status 1.
//
// Not thread-safe: call one of the parsers once, from main, before starting threads.

#ifndef CHUNKCACHE_BENCH_BENCH_FLAGS_H_
#define CHUNKCACHE_BENCH_BENCH_FLAGS_H_

#include <string>
#include <vector>

#include "absl/flags/declare.h"

// The size of the generated catalogue JSON in MiB (tools/catalogue.h). Default: 10.
ABSL_DECLARE_FLAG(double, catalogue_mb);

namespace chunkcache::bench {

// Parses the command line of a binary without Google Benchmark. Returns the positional
// arguments, argv[0] first.
std::vector<char*> ParseFlags(int argc, char** argv, const char* usage);

// Google Benchmark takes its --benchmark_* flags first, then absl parses the rest. Returns the
// positional arguments, argv[0] first.
std::vector<char*> InitBenchmarkAndFlags(int argc, char** argv, const char* usage);

// The catalogue JSON of --catalogue_mb MiB.
std::string FlagSizedCatalogue();

}  // namespace chunkcache::bench

#endif  // CHUNKCACHE_BENCH_BENCH_FLAGS_H_
