#include "catalogue.h"

#include <array>
#include <cstdio>
#include <string_view>

namespace chunkcache::catalogue {
namespace {

// UTF-8 text drawn from the same character sets as gen_catalogue.py.
constexpr std::string_view kKanji =
    "北海道放送番組旅行料理温泉鉄道祭映像作品新作配信特別企画対決深夜初回最終話前編後編総集編未公"
    "開";
constexpr std::string_view kKana =
    "あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん";
constexpr std::array<std::string_view, 16> kWords = {
    "special", "travel", "cooking", "night",  "live",   "classic",  "remaster", "digest",
    "behind",  "scenes", "extra",   "season", "finale", "premiere", "Hokkaido", "onsen"};
constexpr std::array<std::string_view, 5> kGenres = {"variety", "drama", "documentary", "anime",
                                                     "news"};
constexpr std::array<int, 7> kBitrates = {400, 800, 1200, 2500, 4000, 6000, 8000};
constexpr std::size_t kCharBytes = 3;  // every kanji and kana above is 3 bytes of UTF-8

// xoshiro256** seeded by splitmix64: small, fast, and the same everywhere.
class Random {
 public:
  explicit Random(std::uint64_t seed) {
    for (std::uint64_t& s : state_) {
      seed += 0x9e3779b97f4a7c15ULL;
      std::uint64_t z = seed;
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
      s = z ^ (z >> 31);
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
  // Uniform in [lo, hi].
  int Int(int lo, int hi) { return lo + static_cast<int>(Next() % (hi - lo + 1)); }
  double Unit() { return static_cast<double>(Next() >> 11) * 0x1.0p-53; }

 private:
  static std::uint64_t Rotl(std::uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  std::array<std::uint64_t, 4> state_;
};

class Writer {
 public:
  Writer(std::string* out, Random* rng) : out_(*out), rng_(*rng) {}

  void Raw(std::string_view s) { out_.append(s); }
  void Key(std::string_view key) {
    out_.push_back('"');
    out_.append(key);
    out_.append("\":");
  }
  void Str(std::string_view key, std::string_view value) {
    Key(key);
    out_.push_back('"');
    out_.append(value);
    out_.append("\",");
  }
  void Int(std::string_view key, long long value) {
    Key(key);
    out_.append(std::to_string(value));
    out_.push_back(',');
  }
  void Bool(std::string_view key, bool value) {
    Key(key);
    out_.append(value ? "true," : "false,");
  }
  // Closes an object or array opened with `open`, dropping a trailing comma.
  void Close(char close) {
    if (out_.back() == ',') out_.pop_back();
    out_.push_back(close);
    out_.push_back(',');
  }

  void JapaneseText(std::string_view key, int lo, int hi) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(lo, hi); n > 0; --n) {
      const std::string_view set = rng_.Unit() < 0.4 ? kKanji : kKana;
      out_.append(set.substr(kCharBytes * rng_.Int(0, set.size() / kCharBytes - 1), kCharBytes));
    }
    out_.append("\",");
  }
  void KanaText(std::string_view key, int lo, int hi) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(lo, hi); n > 0; --n) {
      out_.append(
          kKana.substr(kCharBytes * rng_.Int(0, kKana.size() / kCharBytes - 1), kCharBytes));
    }
    out_.append("\",");
  }
  void WordText(std::string_view key, int lo, int hi) {
    Key(key);
    out_.push_back('"');
    for (int n = rng_.Int(lo, hi); n > 0; --n) {
      out_.append(kWords[rng_.Int(0, kWords.size() - 1)]);
      if (n > 1) out_.push_back(' ');
    }
    out_.append("\",");
  }
  std::string Uuid() {
    const std::uint64_t hi = (rng_.Next() & ~0xf000ULL) | 0x4000ULL;        // version 4
    const std::uint64_t lo = (rng_.Next() & ~(3ULL << 62)) | (2ULL << 62);  // RFC 4122 variant
    char buf[37];
    std::snprintf(buf, sizeof(buf), "%08llx-%04llx-%04llx-%04llx-%012llx",
                  static_cast<unsigned long long>(hi >> 32),
                  static_cast<unsigned long long>((hi >> 16) & 0xffff),
                  static_cast<unsigned long long>(hi & 0xffff),
                  static_cast<unsigned long long>(lo >> 48),
                  static_cast<unsigned long long>(lo & 0xffffffffffffULL));
    return buf;
  }
  void Timestamp(std::string_view key) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "20%02d-%02d-%02dT%02d:%02d:%02d.000Z", rng_.Int(12, 23),
                  rng_.Int(1, 12), rng_.Int(1, 28), rng_.Int(0, 23), rng_.Int(0, 59),
                  rng_.Int(0, 59));
    Str(key, buf);
  }
  // `count` distinct words, in random order.
  void Tags(std::string_view key, int count) {
    std::array<std::string_view, kWords.size()> words = kWords;
    Key(key);
    out_.push_back('[');
    for (int i = 0; i < count; ++i) {
      std::swap(words[i], words[rng_.Int(i, words.size() - 1)]);
      out_.push_back('"');
      out_.append(words[i]);
      out_.append("\",");
    }
    Close(']');
  }
  // Four distinct bitrates, ascending.
  void Bitrates(std::string_view key) {
    std::array<bool, kBitrates.size()> chosen{};
    for (int picked = 0; picked < 4;) {
      const int i = rng_.Int(0, kBitrates.size() - 1);
      if (!chosen[i]) chosen[i] = true, ++picked;
    }
    Key(key);
    out_.push_back('[');
    for (std::size_t i = 0; i < kBitrates.size(); ++i) {
      if (chosen[i]) out_.append(std::to_string(kBitrates[i])).push_back(',');
    }
    Close(']');
  }

  Random& rng() { return rng_; }

 private:
  std::string& out_;
  Random& rng_;
};

void Episode(Writer& w, const std::string& program_id, int number) {
  const std::string id = w.Uuid();
  w.Raw("{");
  w.Str("__typename", "Episode");
  w.Str("id", id);
  w.Str("programId", program_id);
  w.Int("number", number);
  w.JapaneseText("title", 6, 24);
  w.WordText("titleEn", 2, 6);
  w.JapaneseText("description", 40, 160);
  w.Int("durationSec", w.rng().Int(600, 5400));
  w.Timestamp("publishedAt");
  w.Timestamp("updatedAt");
  w.Timestamp("createdAt");
  w.Key("thumbnail");
  w.Raw("{");
  w.Str("url", "https://img.example.jp/ep/" + id + "/640x360.jpg");
  w.Int("width", 640);
  w.Int("height", 360);
  w.Close('}');
  w.Key("video");
  w.Raw("{");
  w.Str("hls", "https://vod.example.jp/hls/" + id + "/master.m3u8");
  w.Bool("drm", w.rng().Unit() < 0.3);
  w.Bitrates("bitrates");
  w.Close('}');
  w.Bool("free", w.rng().Unit() < 0.2);
  w.Tags("tags", w.rng().Int(1, 5));
  w.Int("viewCount", w.rng().Int(0, 2'000'000));
  w.Close('}');
}

void Program(Writer& w) {
  const std::string id = w.Uuid();
  w.Raw("{");
  w.Str("__typename", "Program");
  w.Str("id", id);
  w.JapaneseText("title", 4, 16);
  w.KanaText("titleKana", 6, 20);
  w.JapaneseText("synopsis", 80, 300);
  w.Str("genre", kGenres[w.rng().Int(0, kGenres.size() - 1)]);
  w.Timestamp("createdAt");
  w.Timestamp("updatedAt");
  w.Str("keyVisual", "https://img.example.jp/pg/" + id + "/key.jpg");
  w.Key("episodeGroups");
  w.Raw("[");
  for (int g = 0, groups = w.rng().Int(1, 4); g < groups; ++g) {
    w.Raw("{");
    w.Str("__typename", "EpisodeGroup");
    w.Str("id", w.Uuid());
    w.Int("order", g);
    w.JapaneseText("name", 4, 12);
    w.Key("episodes");
    w.Raw("[");
    for (int e = 0, episodes = w.rng().Int(3, 14); e < episodes; ++e) Episode(w, id, e + 1);
    w.Close(']');
    w.Close('}');
  }
  w.Close(']');
  w.Close('}');
}

}  // namespace

std::string GenerateCatalogue(const CatalogueOptions& options) {
  const auto target = static_cast<std::size_t>(options.megabytes * 1024 * 1024);
  Random rng(options.seed);
  std::string out;
  out.reserve(target + (64 << 10));
  Writer w(&out, &rng);
  w.Raw(R"({"data":{"listPrograms":{"items":[)");
  const std::size_t prefix = out.size();
  while (out.size() - prefix < target) Program(w);
  if (out.back() == ',') out.pop_back();
  w.Raw(R"(],"nextToken":null}}})");
  return out;
}

}  // namespace chunkcache::catalogue
