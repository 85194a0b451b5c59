#include "catalogue.h"

#include <simdjson.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <string>

namespace chunkcache::catalogue {
namespace {

constexpr double kMiB = 1024 * 1024;

TEST_CASE("the catalogue is valid JSON of the seed's shape") {
  const std::string json = GenerateCatalogue({.megabytes = 0.5});
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(json).get(root) == simdjson::SUCCESS);
  simdjson::dom::array items;
  REQUIRE(root["data"]["listPrograms"]["items"].get(items) == simdjson::SUCCESS);
  REQUIRE(items.size() > 5);
  CHECK(root["data"]["listPrograms"]["nextToken"].is_null());

  int episodes = 0;
  for (simdjson::dom::element program : items) {
    CHECK(std::string_view(program["__typename"]) == "Program");
    CHECK(std::string_view(program["id"]).size() == 36);
    CHECK(program["synopsis"].is_string());
    for (simdjson::dom::element group : program["episodeGroups"].get_array()) {
      CHECK(std::string_view(group["__typename"]) == "EpisodeGroup");
      for (simdjson::dom::element episode : group["episodes"].get_array()) {
        ++episodes;
        CHECK(std::string_view(episode["programId"]) == std::string_view(program["id"]));
        CHECK(episode["durationSec"].is_int64());
        CHECK(episode["video"]["bitrates"].get_array().size() == 4);
        CHECK(episode["video"]["drm"].is_bool());
        CHECK(std::string_view(episode["thumbnail"]["url"]).rfind("https://", 0) == 0);
        const std::size_t tags = episode["tags"].get_array().size();
        CHECK((tags >= 1 && tags <= 5));
      }
    }
  }
  CHECK(episodes > 3 * static_cast<int>(items.size()));
}

TEST_CASE("the catalogue reaches the requested size and overshoots by at most one program") {
  constexpr double kLargestProgram = 64 * 1024;  // 4 groups of 14 episodes of < 1 KiB each
  for (const double megabytes : {0.1, 2.0, 10.0}) {
    CAPTURE(megabytes);
    const std::string json = GenerateCatalogue({.megabytes = megabytes});
    CHECK(json.size() >= megabytes * kMiB);
    CHECK(json.size() <= megabytes * kMiB + kLargestProgram);
  }
}

TEST_CASE("the same seed gives the same bytes, another seed other bytes") {
  CHECK(GenerateCatalogue({.megabytes = 0.2, .seed = 7}) ==
        GenerateCatalogue({.megabytes = 0.2, .seed = 7}));
  CHECK(GenerateCatalogue({.megabytes = 0.2, .seed = 7}) !=
        GenerateCatalogue({.megabytes = 0.2, .seed = 8}));
}

TEST_CASE("the catalogue holds Japanese UTF-8 text") {
  const std::string json = GenerateCatalogue({.megabytes = 0.1});
  CHECK(json.find("\xe7\x95\xaa") != std::string::npos);  // 番 from the kanji set
  CHECK(simdjson::validate_utf8(json.data(), json.size()));
}

TEST_CASE("the catalogue compresses like the seed's, about 3 to 4 times at zstd level 3") {
  const std::string json = GenerateCatalogue({.megabytes = 2});
  std::string compressed(ZSTD_compressBound(json.size()), '\0');
  const std::size_t size =
      ZSTD_compress(compressed.data(), compressed.size(), json.data(), json.size(), 3);
  REQUIRE(!ZSTD_isError(size));
  const double ratio = static_cast<double>(json.size()) / static_cast<double>(size);
  CHECK(ratio > 3.0);
  CHECK(ratio < 4.5);
}

}  // namespace
}  // namespace chunkcache::catalogue
