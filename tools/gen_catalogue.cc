// gen_catalogue: writes the reference programme catalogue (tools/catalogue.h) as JSON.
//
//   gen_catalogue [--mb SIZE] [--seed N] [-o FILE]

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "catalogue.h"

namespace {

int Usage(const char* why) {
  std::fprintf(stderr, "gen_catalogue: %s\nusage: gen_catalogue [--mb SIZE] [--seed N] [-o FILE]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  chunkcache::catalogue::CatalogueOptions options;
  const char* output = nullptr;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    char* end = nullptr;
    if (std::strcmp(argv[i], "--mb") == 0 && has_value) {
      options.megabytes = std::strtod(argv[++i], &end);
      if (*end != '\0' || !(options.megabytes > 0)) return Usage("--mb takes a positive number");
    } else if (std::strcmp(argv[i], "--seed") == 0 && has_value) {
      options.seed = std::strtoull(argv[++i], &end, 10);
      if (*end != '\0') return Usage("--seed takes a whole number");
    } else if (std::strcmp(argv[i], "-o") == 0 && has_value) {
      output = argv[++i];
    } else {
      return Usage((std::string("unexpected argument ") + argv[i]).c_str());
    }
  }
  const std::string json = chunkcache::catalogue::GenerateCatalogue(options);
  std::FILE* out = output != nullptr ? std::fopen(output, "wb") : stdout;
  if (out == nullptr) return Usage((std::string("cannot write ") + output).c_str());
  const bool written = std::fwrite(json.data(), 1, json.size(), out) == json.size();
  if (output != nullptr) std::fclose(out);
  return written ? 0 : 1;
}
