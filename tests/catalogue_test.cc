#include "chunkcache/testing/catalogue.h"

#include <simdjson.h>
#include <zstd.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

namespace chunkcache::testing {
namespace {

constexpr double kMiB = 1024 * 1024;

std::string_view Text(simdjson::dom::element element) {
  std::string_view text;
  REQUIRE(element.get(text) == simdjson::SUCCESS);
  return text;
}

// Checks an object's field names, in the order gen_catalogue.py writes them.
void RequireFields(simdjson::dom::element element, std::initializer_list<std::string_view> names) {
  simdjson::dom::object object;
  REQUIRE(element.get(object) == simdjson::SUCCESS);
  REQUIRE(object.size() == names.size());
  auto name = names.begin();
  for (const simdjson::dom::key_value_pair field : object) CHECK(field.key == *name++);
}

bool IsUuidV4(std::string_view id) {
  if (id.size() != 36 || id[14] != '4' || std::string_view("89ab").find(id[19]) == id.npos) {
    return false;
  }
  for (std::size_t i = 0; i < id.size(); ++i) {
    const bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? id[i] != '-' : std::string_view("0123456789abcdef").find(id[i]) == id.npos) {
      return false;
    }
  }
  return true;
}

bool IsTimestamp(std::string_view ts) {
  return ts.size() == 24 && ts.substr(0, 2) == "20" && ts[4] == '-' && ts[10] == 'T' &&
         ts.substr(19) == ".000Z";
}

void CheckEpisode(simdjson::dom::element episode, std::string_view program_id, int64_t number) {
  RequireFields(episode, {"__typename", "id", "programId", "number", "title", "titleEn",
                          "description", "durationSec", "publishedAt", "updatedAt", "createdAt",
                          "thumbnail", "video", "free", "tags", "viewCount"});
  CHECK(Text(episode["__typename"]) == "Episode");
  const std::string_view id = Text(episode["id"]);
  CHECK(IsUuidV4(id));
  CHECK(Text(episode["programId"]) == program_id);
  CHECK(int64_t(episode["number"]) == number);
  CHECK(Text(episode["title"]).size() % 3 == 0);  // kanji and kana only, 3 bytes each
  CHECK(Text(episode["titleEn"]).find(' ') != std::string_view::npos);
  CHECK(episode["description"].is_string());
  const int64_t duration = episode["durationSec"];
  CHECK((duration >= 600 && duration <= 5400));
  CHECK(IsTimestamp(Text(episode["publishedAt"])));
  CHECK(IsTimestamp(Text(episode["updatedAt"])));
  CHECK(IsTimestamp(Text(episode["createdAt"])));
  RequireFields(episode["thumbnail"], {"url", "width", "height"});
  CHECK(Text(episode["thumbnail"]["url"]) ==
        "https://img.example.jp/ep/" + std::string(id) + "/640x360.jpg");
  CHECK(int64_t(episode["thumbnail"]["width"]) == 640);
  RequireFields(episode["video"], {"hls", "drm", "bitrates"});
  CHECK(Text(episode["video"]["hls"]) ==
        "https://vod.example.jp/hls/" + std::string(id) + "/master.m3u8");
  CHECK(episode["video"]["drm"].is_bool());
  int64_t previous = 0;
  simdjson::dom::array bitrates = episode["video"]["bitrates"];
  CHECK(bitrates.size() == 4);
  for (const int64_t bitrate : bitrates) {
    CHECK(bitrate > previous);  // ascending, hence distinct
    previous = bitrate;
  }
  CHECK(episode["free"].is_bool());
  simdjson::dom::array tags = episode["tags"];
  CHECK((tags.size() >= 1 && tags.size() <= 5));
  for (const simdjson::dom::element tag : tags) CHECK(tag.is_string());
  CHECK(episode["viewCount"].is_int64());
}

TEST_CASE("the catalogue is valid JSON") {
  const std::string json = GenerateCatalogue({.megabytes = 0.5});
  simdjson::dom::parser parser;
  auto result = parser.parse(json);
  REQUIRE(result.error() == simdjson::SUCCESS);
}

TEST_CASE("the catalogue has the programs, groups and episodes of gen_catalogue.py") {
  const std::string json = GenerateCatalogue({.megabytes = 0.5});
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  REQUIRE(parser.parse(json).get(root) == simdjson::SUCCESS);
  RequireFields(root, {"data"});
  RequireFields(root["data"], {"listPrograms"});
  RequireFields(root["data"]["listPrograms"], {"items", "nextToken"});
  CHECK(root["data"]["listPrograms"]["nextToken"].is_null());
  simdjson::dom::array items;
  REQUIRE(root["data"]["listPrograms"]["items"].get(items) == simdjson::SUCCESS);
  REQUIRE(items.size() > 5);

  std::size_t episodes = 0;
  for (const simdjson::dom::element program : items) {
    RequireFields(program, {"__typename", "id", "title", "titleKana", "synopsis", "genre",
                            "createdAt", "updatedAt", "keyVisual", "episodeGroups"});
    CHECK(Text(program["__typename"]) == "Program");
    const std::string_view id = Text(program["id"]);
    CHECK(IsUuidV4(id));
    CHECK(Text(program["keyVisual"]) ==
          "https://img.example.jp/pg/" + std::string(id) + "/key.jpg");
    CHECK(IsTimestamp(Text(program["createdAt"])));
    CHECK(program["synopsis"].is_string());
    simdjson::dom::array groups = program["episodeGroups"];
    CHECK((groups.size() >= 1 && groups.size() <= 4));
    int64_t order = 0;
    for (const simdjson::dom::element group : groups) {
      RequireFields(group, {"__typename", "id", "order", "name", "episodes"});
      CHECK(Text(group["__typename"]) == "EpisodeGroup");
      CHECK(IsUuidV4(Text(group["id"])));
      CHECK(int64_t(group["order"]) == order++);
      int64_t number = 0;
      for (const simdjson::dom::element episode : group["episodes"].get_array()) {
        CheckEpisode(episode, id, ++number);
        ++episodes;
      }
      CHECK((number >= 1 && number <= 14));
    }
  }
  CHECK(episodes > 3 * items.size());
}

TEST_CASE("the catalogue reaches the requested size and exceeds it by at most 5%") {
  for (const double megabytes : {0.1, 2.0}) {
    for (const std::uint64_t seed : {1, 2, 3, 20230830}) {
      CAPTURE(megabytes, seed);
      const std::string json = GenerateCatalogue({.megabytes = megabytes, .seed = seed});
      CHECK(json.size() >= megabytes * kMiB);
      CHECK(json.size() <= megabytes * kMiB * 1.05);
    }
  }
}

TEST_CASE("a size of zero gives an empty item list") {
  CHECK(GenerateCatalogue({.megabytes = 0}) ==
        R"({"data":{"listPrograms":{"items":[],"nextToken":null}}})");
}

TEST_CASE("the same seed gives the same bytes, another seed other bytes") {
  CHECK(GenerateCatalogue({.megabytes = 0.2, .seed = 7}) ==
        GenerateCatalogue({.megabytes = 0.2, .seed = 7}));
  CHECK(GenerateCatalogue({.megabytes = 0.2, .seed = 7}) !=
        GenerateCatalogue({.megabytes = 0.2, .seed = 8}));
}

TEST_CASE("the catalogue holds Japanese text as raw UTF-8, not escapes") {
  const std::string json = GenerateCatalogue({.megabytes = 0.1});
  CHECK(json.find("\xe7\x95\xaa") != std::string::npos);  // 番 from the kanji set
  CHECK(json.find("\xe3\x81\x82") != std::string::npos);  // あ from the kana set
  CHECK(json.find("\\u") == std::string::npos);
  CHECK(simdjson::validate_utf8(json.data(), json.size()));
}

TEST_CASE("the catalogue compresses 2 to 6 times at zstd level 3, like gen_catalogue.py") {
  const std::string json = GenerateCatalogue({.megabytes = 2});
  std::string compressed(ZSTD_compressBound(json.size()), '\0');
  const std::size_t size =
      ZSTD_compress(compressed.data(), compressed.size(), json.data(), json.size(), 3);
  REQUIRE(!ZSTD_isError(size));
  const double ratio = static_cast<double>(json.size()) / static_cast<double>(size);
  CAPTURE(ratio);
  CHECK(ratio >= 2.0);
  CHECK(ratio <= 6.0);
}

}  // namespace
}  // namespace chunkcache::testing
