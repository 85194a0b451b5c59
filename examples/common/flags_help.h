// --help for the project's programs, one style for all: the program's usage message, then each
// flag defined in the program's own source file, sorted by name, with its default and its help
// text folded at 90 columns. (absl's built-in --help lists every linked flag, the library's
// included, and exits with status 1.)
//
//   ABSL_FLAG(int, port, 8080, "TCP port to listen on.");
//   ...
//   absl::SetProgramUsageMessage("usage: my_service [flags]");
//   chunkcache::examples::ConfigureFlagsUsage("my_service", "my_service.cc");
//   if (chunkcache::examples::WantsHelp(absl::MakeConstSpan(argv, argc))) {
//     absl::PrintF("%s", chunkcache::examples::FlagsHelp("my_service", "my_service.cc"));
//     return 0;
//   }
//   absl::ParseCommandLine(argc, argv);
//
// `source_file` is a part of the path of the .cc file that defines the program's flags (as
// absl::CommandLineFlag::Filename() reports it). Call these from main() before other threads
// start: absl's usage configuration is process-wide.

#ifndef CHUNKCACHE_EXAMPLES_COMMON_FLAGS_HELP_H_
#define CHUNKCACHE_EXAMPLES_COMMON_FLAGS_HELP_H_

#include <algorithm>
#include <cstddef>
#include <string>
#include <vector>

#include "absl/flags/commandlineflag.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "chunkcache/chunkcache.h"

namespace chunkcache::examples {

// `text` folded at spaces into lines of at most `width` characters (a longer word gets a line of
// its own), each line after `indent`, the last one ended by a newline.
inline std::string WrapText(absl::string_view text, std::size_t width, absl::string_view indent) {
  std::string out;
  std::size_t line = 0;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (line > 0 && line + 1 + word.size() > width) {
      out += "\n";
      line = 0;
    }
    if (line == 0) {
      absl::StrAppend(&out, indent, word);
    } else {
      absl::StrAppend(&out, " ", word);
      ++line;
    }
    line += word.size();
  }
  return out + "\n";
}

// True if --help or -help comes before any "--" (after which everything is an argument).
inline bool WantsHelp(absl::Span<char* const> args) {
  for (const char* arg : args) {
    const absl::string_view flag = arg;
    if (flag == "--") return false;
    if (flag == "--help" || flag == "-help") return true;
  }
  return false;
}

// "PROGRAM: USAGE\n\nflags:\n" (USAGE is absl::ProgramUsageMessage()), then for each flag defined
// in a file whose path contains `source_file`, sorted by name:
// "  --NAME (default: VALUE)\n" and its help text folded at 90 columns, indented by six spaces.
inline std::string FlagsHelp(absl::string_view program, absl::string_view source_file) {
  std::vector<const absl::CommandLineFlag*> flags;
  for (const auto& [name, flag] : absl::GetAllFlags()) {
    if (absl::StrContains(flag->Filename(), source_file)) flags.push_back(flag);
  }
  std::sort(flags.begin(), flags.end(),
            [](const auto* a, const auto* b) { return a->Name() < b->Name(); });
  std::string help = absl::StrCat(program, ": ", absl::ProgramUsageMessage(), "\n\nflags:\n");
  for (const absl::CommandLineFlag* flag : flags) {
    const std::string default_value = flag->DefaultValue();
    absl::StrAppend(&help, "  --", flag->Name(),
                    " (default: ", default_value.empty() ? "none" : default_value, ")\n",
                    WrapText(flag->Help(), 90, "      "));
  }
  return help;
}

// Points absl's --helpfull and --helpshort at the flags of `source_file`, and makes --version
// print "PROGRAM VERSION" (the library's version).
inline void ConfigureFlagsUsage(absl::string_view program, absl::string_view source_file) {
  absl::FlagsUsageConfig config;
  config.contains_help_flags = [file = std::string(source_file)](absl::string_view path) {
    return absl::StrContains(path, file);
  };
  config.contains_helpshort_flags = config.contains_help_flags;
  config.version_string = [version = absl::StrCat(program, " ", CHUNKCACHE_VERSION_STRING, "\n")] {
    return version;
  };
  absl::SetFlagsUsageConfig(config);
}

}  // namespace chunkcache::examples

#endif  // CHUNKCACHE_EXAMPLES_COMMON_FLAGS_HELP_H_
