// gen_catalogue: writes the reference programme catalogue (see catalogue.h) as JSON.
//
//   gen_catalogue [--mb SIZE] [--seed N] [-o FILE]
//
// SIZE is in MiB (default 10), N the random seed (default 20230830); the output goes to stdout
// unless -o names a file. Exit code 2 on bad arguments, 1 when the output cannot be written.

#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>

#include "chunkcache/testing/catalogue.h"

namespace {

constexpr std::string_view kUsage = "usage: gen_catalogue [--mb SIZE] [--seed N] [-o FILE]";

int BadArguments(const std::string& why) {
  std::fprintf(stderr, "gen_catalogue: %s (%.*s)\n", why.c_str(), static_cast<int>(kUsage.size()),
               kUsage.data());
  return 2;
}

int Failed(const std::string& what, int error) {
  std::fprintf(stderr, "gen_catalogue: %s: %s\n", what.c_str(), std::strerror(error));
  return 1;
}

// Whole-string parses: trailing junk, signs on the seed and empty values are errors.
template <typename T>
std::optional<T> Parse(std::string_view text) {
  T value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Writes `json` to `path`, or to stdout when `path` is null; returns the exit code.
int Write(const std::string& json, const char* path) {
  std::FILE* out = path != nullptr ? std::fopen(path, "wb") : stdout;
  const std::string name = path != nullptr ? path : "stdout";
  if (out == nullptr) return Failed("cannot open " + name, errno);
  bool ok = std::fwrite(json.data(), 1, json.size(), out) == json.size();
  int error = errno;
  // fclose/fflush report the errors that buffering delayed (a full disk, a closed pipe).
  if ((path != nullptr ? std::fclose(out) : std::fflush(out)) != 0 && ok) {
    ok = false;
    error = errno;
  }
  return ok ? 0 : Failed("cannot write " + name, error);
}

}  // namespace

int main(int argc, char** argv) {
  chunkcache::testing::CatalogueOptions options;
  const char* output = nullptr;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (flag == "-h" || flag == "--help") {
      std::printf("%.*s\n", static_cast<int>(kUsage.size()), kUsage.data());
      return 0;
    }
    if (flag != "--mb" && flag != "--seed" && flag != "-o") {
      return BadArguments("unknown argument '" + std::string(flag) + "'");
    }
    if (i + 1 == argc) return BadArguments(std::string(flag) + " needs a value");
    const std::string_view value = argv[++i];
    if (flag == "--mb") {
      const std::optional<double> mb = Parse<double>(value);
      if (!mb || !std::isfinite(*mb) || *mb <= 0) {
        return BadArguments("--mb takes a positive number of MiB, not '" + std::string(value) +
                            "'");
      }
      options.megabytes = *mb;
    } else if (flag == "--seed") {
      const std::optional<std::uint64_t> seed = Parse<std::uint64_t>(value);
      if (!seed) {
        return BadArguments("--seed takes a whole number from 0 to 2^64-1, not '" +
                            std::string(value) + "'");
      }
      options.seed = *seed;
    } else {
      if (value.empty()) return BadArguments("-o needs a file name");
      output = argv[i];
    }
  }
  std::string json;
  try {
    json = chunkcache::testing::GenerateCatalogue(options);
  } catch (const std::exception& e) {  // std::bad_alloc or std::length_error for a huge --mb
    std::fprintf(stderr, "gen_catalogue: cannot generate %g MiB: %s\n", options.megabytes,
                 e.what());
    return 1;
  }
  return Write(json, output);
}
