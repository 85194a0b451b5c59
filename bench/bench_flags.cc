#include "bench_flags.h"

#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string_view>

#include "../examples/common/flags_help.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "chunkcache/testing/catalogue.h"

ABSL_FLAG(double, catalogue_mb, 10,
          "Size of the generated catalogue JSON in MiB (tools/catalogue.h).");

namespace chunkcache::bench {
namespace {

// What --help prints first: "<program>: <usage>". Set once by the parsers.
std::string& ProgramName() {
  static auto* name = new std::string("bench");
  return *name;
}

// Every flag defined in a source file under bench/, in the one --help style of the project's
// programs.
void PrintHelp() { absl::PrintF("%s", examples::FlagsHelp(ProgramName(), "/bench/")); }

void PrintHelpAndBenchmarkFlags() {
  PrintHelp();
  absl::PrintF("\nGoogle Benchmark's flags:\n");
  benchmark::PrintDefaultHelp();
}

void SetUsage(const char* argv0, const char* usage) {
  ProgramName() = std::filesystem::path(argv0).filename().string();
  absl::SetProgramUsageMessage(usage);
}

// Runs `print_help` and exits if asked to; else parses the flags.
std::vector<char*> HelpOrParse(int argc, char** argv, void (*print_help)()) {
  if (examples::WantsHelp(absl::MakeConstSpan(argv, argc))) {
    print_help();
    std::exit(0);
  }
  return absl::ParseCommandLine(argc, argv);
}

}  // namespace

std::vector<char*> ParseFlags(int argc, char** argv, const char* usage) {
  SetUsage(argv[0], usage);
  return HelpOrParse(argc, argv, &PrintHelp);
}

std::vector<char*> InitBenchmarkAndFlags(int argc, char** argv, const char* usage) {
  SetUsage(argv[0], usage);
  benchmark::Initialize(&argc, argv, &PrintHelpAndBenchmarkFlags);  // exits 0 after --help
  return HelpOrParse(argc, argv, &PrintHelpAndBenchmarkFlags);
}

std::string FlagSizedCatalogue() {
  return testing::GenerateCatalogue({.megabytes = absl::GetFlag(FLAGS_catalogue_mb)});
}

}  // namespace chunkcache::bench
