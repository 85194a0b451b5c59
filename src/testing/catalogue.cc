#include "chunkcache/testing/catalogue.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace chunkcache::testing {
namespace {

// The character sets and word list of gen_catalogue.py; their mix sets the compression ratio.
constexpr std::string_view kKanji =
    "北海道放送番組旅行料理温泉鉄道祭映像作品新作配信特別企画対決深夜初回最終話前編後編総集編未公"
    "開";
constexpr std::string_view kKana =
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん";
constexpr std::size_t kCharBytes = 3;  // every kanji and kana above is 3 bytes of UTF-8
constexpr double kKanjiShare = 0.4;    // chance that a character of Japanese text is a kanji
constexpr std::array<std::string_view, 16> kWords = {
    "special", "travel", "cooking", "night",  "live",   "classic",  "remaster", "digest",
    "behind",  "scenes", "extra",   "season", "finale", "premiere", "Hokkaido", "onsen"};
constexpr std::array<std::string_view, 5> kGenres = {"variety", "drama", "documentary", "anime",
                                                     "news"};
constexpr std::array<int, 7> kBitrates = {400, 800, 1200, 2500, 4000, 6000, 8000};
constexpr std::size_t kBitratesPerVideo = 4;

constexpr std::string_view kHead = R"({"data":{"listPrograms":{"items":[)";
constexpr std::string_view kTail = R"(],"nextToken":null}}})";
// Room for what is written after the target is reached: at most one program header, group
// header and episode (each under 1.5 KiB) and the closing brackets.
constexpr std::size_t kOvershoot = 8 << 10;

// xoshiro256** seeded through splitmix64: small, fast and the same on every platform, which
// std::uniform_int_distribution is not.
class Random {
 public:
  explicit Random(std::uint64_t seed) {
    for (std::uint64_t& word : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      word = z ^ (z >> 31);
    }
  }

  std::uint64_t Next() {
    const std::uint64_t result = Rotl(state_[1] * 5, 7) * 9;
    const std::uint64_t t = state_[1] << 17;
    state_[2] ^= state_[0];
    state_[3] ^= state_[1];
    state_[1] ^= state_[2];
    state_[0] ^= state_[3];
    state_[2] ^= t;
    state_[3] = Rotl(state_[3], 45);
    return result;
  }

  // Uniform in [lo, hi]; the modulo bias is below 2^-40 for these small ranges.
  int Int(int lo, int hi) { return lo + static_cast<int>(Next() % (hi - lo + 1)); }
  // Uniform index into a container of `size` elements.
  std::size_t Index(std::size_t size) { return Next() % size; }
  // Uniform in [0, 1).
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static std::uint64_t Rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  std::array<std::uint64_t, 4> state_;
};

// A UUID v4 as 36 lowercase characters, kept on the stack: every episode needs one.
class Uuid {
 public:
  explicit Uuid(Random& rng) {
    const std::uint64_t hi = (rng.Next() & ~0xf000ULL) | 0x4000ULL;        // version 4
    const std::uint64_t lo = (rng.Next() & ~(3ULL << 62)) | (2ULL << 62);  // RFC 4122 variant
    char* p = text_.data();
    p = Hex(hi >> 32, 8, p);
    *p++ = '-';
    p = Hex(hi >> 16, 4, p);
    *p++ = '-';
    p = Hex(hi, 4, p);
    *p++ = '-';
    p = Hex(lo >> 48, 4, p);
    *p++ = '-';
    Hex(lo, 12, p);
  }

  std::string_view view() const { return {text_.data(), text_.size()}; }

 private:
  // Writes the low `digits` nibbles of `value`, most significant first.
  static char* Hex(std::uint64_t value, int digits, char* out) {
    for (int i = digits - 1; i >= 0; --i) {
      out[i] = "0123456789abcdef"[value & 0xf];
      value >>= 4;
    }
    return out + digits;
  }

  std::array<char, 36> text_;
};

// Writes the catalogue straight into one string. Every value is followed by a comma and Close()
// drops the last one, so the writers of objects never track whether a field is the first.
class CatalogueBuilder {
 public:
  CatalogueBuilder(std::uint64_t seed, std::size_t target_bytes)
      : rng_(seed), target_bytes_(target_bytes) {}

  std::string Build() && {
    out_.reserve(target_bytes_ + kOvershoot);
    out_.append(kHead);
    while (!Full()) AddProgram();
    if (out_.back() == ',') out_.pop_back();
    out_.append(kTail);
    return std::move(out_);
  }

 private:
  // Whether the output, once closed, would reach the target.
  bool Full() const { return out_.size() + kTail.size() >= target_bytes_; }

  void AddProgram() {
    const Uuid id(rng_);
    out_.push_back('{');
    String("__typename", "Program");
    String("id", id.view());
    JapaneseText("title", 4, 16);
    KanaText("titleKana", 6, 20);
    JapaneseText("synopsis", 80, 300);
    String("genre", kGenres[rng_.Index(kGenres.size())]);
    Timestamp("createdAt");
    Timestamp("updatedAt");
    String("keyVisual", {"https://img.example.jp/pg/", id.view(), "/key.jpg"});
    Key("episodeGroups");
    out_.push_back('[');
    // Stops after the episode that fills the output, so it lands within an episode of the target;
    // even then every program keeps at least one group of at least one episode.
    for (int order = 0, groups = rng_.Int(1, 4); order < groups && (order == 0 || !Full());
         ++order) {
      out_.push_back('{');
      String("__typename", "EpisodeGroup");
      String("id", Uuid(rng_).view());
      Number("order", order);
      JapaneseText("name", 4, 12);
      Key("episodes");
      out_.push_back('[');
      for (int number = 1, episodes = rng_.Int(3, 14);
           number <= episodes && (number == 1 || !Full()); ++number) {
        AddEpisode(id.view(), number);
      }
      Close(']');
      Close('}');
    }
    Close(']');
    Close('}');
  }

  void AddEpisode(std::string_view program_id, int number) {
    const Uuid id(rng_);
    out_.push_back('{');
    String("__typename", "Episode");
    String("id", id.view());
    String("programId", program_id);
    Number("number", number);
    JapaneseText("title", 6, 24);
    WordText("titleEn", 2, 6);
    JapaneseText("description", 40, 160);
    Number("durationSec", rng_.Int(600, 5400));
    Timestamp("publishedAt");
    Timestamp("updatedAt");
    Timestamp("createdAt");
    Key("thumbnail");
    out_.push_back('{');
    String("url", {"https://img.example.jp/ep/", id.view(), "/640x360.jpg"});
    Number("width", 640);
    Number("height", 360);
    Close('}');
    Key("video");
    out_.push_back('{');
    String("hls", {"https://vod.example.jp/hls/", id.view(), "/master.m3u8"});
    Bool("drm", rng_.Unit() < 0.3);
    Bitrates("bitrates");
    Close('}');
    Bool("free", rng_.Unit() < 0.2);
    Tags("tags", rng_.Int(1, 5));
    Number("viewCount", rng_.Int(0, 2'000'000));
    Close('}');
  }

  void Key(std::string_view key) {
    out_.push_back('"');
    out_.append(key);
    out_.append("\":");
  }

  // None of the generated strings needs escaping, so they are copied as they are.
  void String(std::string_view key, std::initializer_list<std::string_view> pieces) {
    Key(key);
    out_.push_back('"');
    for (std::string_view piece : pieces) out_.append(piece);
    out_.append("\",");
  }
  void String(std::string_view key, std::string_view value) { String(key, {value}); }

  void Number(std::string_view key, int value) {
    Key(key);
    AppendNumber(value);
  }

  void Bool(std::string_view key, bool value) {
    Key(key);
    out_.append(value ? "true," : "false,");
  }

  // Ends the innermost object or array, whose last value left a trailing comma (or none, if empty).
  void Close(char bracket) {
    if (out_.back() == ',') out_.pop_back();
    out_.push_back(bracket);
    out_.push_back(',');
  }

  void AppendNumber(int value) {
    char buf[16];
    const auto [end, ec] = std::to_chars(buf, buf + sizeof(buf), value);
    out_.append(buf, end);
    out_.push_back(',');
  }

  void AppendChar(std::string_view set) {
    out_.append(set.substr(kCharBytes * rng_.Index(set.size() / kCharBytes), kCharBytes));
  }

  // A mix of kanji and kana, like a title or synopsis.
  void JapaneseText(std::string_view key, int min_chars, int max_chars) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(min_chars, max_chars); n > 0; --n) {
      AppendChar(rng_.Unit() < kKanjiShare ? kKanji : kKana);
    }
    out_.append("\",");
  }

  // Kana only, like the reading of a title.
  void KanaText(std::string_view key, int min_chars, int max_chars) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(min_chars, max_chars); n > 0; --n) AppendChar(kKana);
    out_.append("\",");
  }

  // Words separated by single spaces, repeats allowed.
  void WordText(std::string_view key, int min_words, int max_words) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(min_words, max_words); n > 0; --n) {
      out_.append(kWords[rng_.Index(kWords.size())]);
      if (n > 1) out_.push_back(' ');
    }
    out_.append("\",");
  }

  void Timestamp(std::string_view key) {
    char buf[32];
    const int length = std::snprintf(buf, sizeof(buf), "20%02d-%02d-%02dT%02d:%02d:%02d.000Z",
                                     rng_.Int(12, 23), rng_.Int(1, 12), rng_.Int(1, 28),
                                     rng_.Int(0, 23), rng_.Int(0, 59), rng_.Int(0, 59));
    String(key, std::string_view(buf, length));
  }

  // `count` distinct words in random order (random.sample).
  void Tags(std::string_view key, int count) {
    std::array<std::string_view, kWords.size()> words = kWords;
    Key(key);
    out_.push_back('[');
    for (int i = 0; i < count; ++i) {
      std::swap(words[i], words[i + rng_.Index(words.size() - i)]);
      out_.push_back('"');
      out_.append(words[i]);
      out_.append("\",");
    }
    Close(']');
  }

  // kBitratesPerVideo distinct bitrates, ascending (sorted(random.sample)).
  void Bitrates(std::string_view key) {
    std::array<std::size_t, kBitrates.size()> order;
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    for (std::size_t i = 0; i < kBitratesPerVideo; ++i) {
      std::swap(order[i], order[i + rng_.Index(order.size() - i)]);
    }
    std::sort(order.begin(), order.begin() + kBitratesPerVideo);
    Key(key);
    out_.push_back('[');
    for (std::size_t i = 0; i < kBitratesPerVideo; ++i) AppendNumber(kBitrates[order[i]]);
    Close(']');
  }

  Random rng_;
  const std::size_t target_bytes_;
  std::string out_;
};

}  // namespace

std::string GenerateCatalogue(const CatalogueOptions& options) {
  // Clamped before the cast, which is undefined for values a size_t cannot hold; a target
  // beyond what a string can hold then fails in reserve() with std::length_error.
  const double target = std::min(options.megabytes * 1024 * 1024, 0x1p63);
  const std::size_t target_bytes = target > 0 ? static_cast<std::size_t>(target) : 0;
  return CatalogueBuilder(options.seed, target_bytes).Build();
}

}  // namespace chunkcache::testing
