// Line charts written as PNG files, with no library: chunkcache_loadgen's --plot.
//
// Canvas is a palette image (up to 256 colours) with lines, rectangles and text in a built-in
// 5x7 pixel font; EncodePng() writes it as an 8-bit indexed PNG compressed with a small
// fixed-Huffman deflate (plots are mostly runs of one colour, so they stay a few tens of KB).
// DrawChart() draws one chart (title, axes with ticks and grid, linear or log y, series with a
// legend right of the plot, labelled reference lines) into a rectangle of a canvas.
//
// Not thread-safe: one thread draws one canvas.

#ifndef CHUNKCACHE_BENCH_LOADGEN_PLOT_H_
#define CHUNKCACHE_BENCH_LOADGEN_PLOT_H_

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/strings/str_format.h"

namespace chunkcache::bench::plot {

// ---- Font ---------------------------------------------------------------------------------------

// A glyph is 7 rows of 5 pixels ('#' set), plus 2 rows below the baseline for descenders.
struct Glyph {
  char c;
  const char* rows;
};

// clang-format off
inline constexpr Glyph kGlyphs[] = {
    {' ', "..................................."},
    {'!', "..#....#....#....#....#.........#.."},
    {'"', ".#.#..#.#..#.#....................."},
    {'#', ".#.#..#.#.#####.#.#.#####.#.#..#.#."},
    {'%', "##...##..#...#...#...#...#..##...##"},
    {'\'', "..#....#...#......................."},
    {'(', "...#...#...#....#....#.....#.....#."},
    {')', ".#.....#.....#....#....#...#...#..."},
    {'*', ".......#..#.#.#.###.#.#.#..#......."},
    {'+', ".......#....#..#####..#....#......."},
    {',', "..........................##....#...#........"},
    {'-', "...............#####..............."},
    {'.', ".........................##....##.."},
    {'/', ".........#...#...#...#...#........."},
    {'0', ".###.#...##..###.#.###..##...#.###."},
    {'1', "..#...##....#....#....#....#...###."},
    {'2', ".###.#...#....#...#...#...#...#####"},
    {'3', "#####...#...#.....#.....##...#.###."},
    {'4', "...#...##..#.#.#..#.#####...#....#."},
    {'5', "#####.....####.....#....##...#.###."},
    {'6', "..##..#...#....####.#...##...#.###."},
    {'7', "#####....#...#...#...#....#....#..."},
    {'8', ".###.#...##...#.###.#...##...#.###."},
    {'9', ".###.#...##...#.####....#...#..##.."},
    {':', "......##...##.......##...##........"},
    {'<', "...#...#...#...#.....#.....#.....#."},
    {'=', "..........#####.....#####.........."},
    {'>', ".#.....#.....#.....#...#...#...#..."},
    {'?', ".###.#...#....#...#...#.........#.."},
    {'A', ".###.#...##...#######...##...##...#"},
    {'B', "####.#...##...#####.#...##...#####."},
    {'C', ".###.#...##....#....#....#...#.###."},
    {'D', "###..#..#.#...##...##...##..#.###.."},
    {'E', "######....#....####.#....#....#####"},
    {'F', "######....#....####.#....#....#...."},
    {'G', ".###.#...##....#.####...##...#.####"},
    {'H', "#...##...##...#######...##...##...#"},
    {'I', ".###...#....#....#....#....#...###."},
    {'J', "..###...#....#....#....#.#..#..##.."},
    {'K', "#...##..#.#.#..##...#.#..#..#.#...#"},
    {'L', "#....#....#....#....#....#....#####"},
    {'M', "#...###.###.#.##.#.##...##...##...#"},
    {'N', "#...##...###..##.#.##..###...##...#"},
    {'O', ".###.#...##...##...##...##...#.###."},
    {'P', "####.#...##...#####.#....#....#...."},
    {'Q', ".###.#...##...##...##.#.##..#..##.#"},
    {'R', "####.#...##...#####.#.#..#..#.#...#"},
    {'S', ".#####....#.....###.....#....#####."},
    {'T', "#####..#....#....#....#....#....#.."},
    {'U', "#...##...##...##...##...##...#.###."},
    {'V', "#...##...##...##...##...#.#.#...#.."},
    {'W', "#...##...##...##.#.##.#.##.#.#.#.#."},
    {'X', "#...##...#.#.#...#...#.#.#...##...#"},
    {'Y', "#...##...#.#.#...#....#....#....#.."},
    {'Z', "#####....#...#...#...#...#....#####"},
    {'[', ".###..#....#....#....#....#....###."},
    {']', ".###....#....#....#....#....#..###."},
    {'_', "..............................#####"},
    {'a', "...........###.....#.#####...#.####"},
    {'b', "#....#....#.##.##..##...##...#####."},
    {'c', "...........###.#....#....#...#.###."},
    {'d', "....#....#.##.##..###...##...#.####"},
    {'e', "...........###.#...#######.....###."},
    {'f', "..##..#..#.#...###...#....#....#..."},
    {'g', "...........#####...##...##...#.####....#.###."},
    {'h', "#....#....#.##.##..##...##...##...#"},
    {'i', "..#........##....#....#....#...###."},
    {'j', "...#........##....#....#....#....#.#..#..##.."},
    {'k', "#....#....#..#.#.#..##...#.#..#..#."},
    {'l', ".##....#....#....#....#....#...###."},
    {'m', "..........##.#.#.#.##.#.##.#.##.#.#"},
    {'n', "..........#.##.##..##...##...##...#"},
    {'o', "...........###.#...##...##...#.###."},
    {'p', "..........####.#...##...##...#####.#....#...."},
    {'q', "...........#####...##...##...#.####....#....#"},
    {'r', "..........#.##.##..##....#....#...."},
    {'s', "...........#####.....###.....#####."},
    {'t', ".#....#...###...#....#....#..#..##."},
    {'u', "..........#...##...##...##..##.##.#"},
    {'v', "..........#...##...##...#.#.#...#.."},
    {'w', "..........#...##...##.#.##.#.#.#.#."},
    {'x', "..........#...#.#.#...#...#.#.#...#"},
    {'y', "..........#...##...##...##...#.####....#.###."},
    {'z', "..........#####...#...#...#...#####"},
    {'|', "..#....#....#....#....#....#....#.."},
    {'~', "...........#...#.#.#...#..........."},
};
// clang-format on

inline constexpr int kGlyphWidth = 5;
inline constexpr int kGlyphRows = 9;  // 7 + 2 for descenders
inline constexpr int kCharAdvance = 6;
inline constexpr int kLineHeight = 11;

// The pixel rows of `c`, each a bit mask of kGlyphWidth bits (bit 4 = leftmost); a hollow box for
// characters the font lacks.
inline std::array<std::uint8_t, kGlyphRows> GlyphBits(char c) {
  static const std::array<std::array<std::uint8_t, kGlyphRows>, 128> table = [] {
    std::array<std::array<std::uint8_t, kGlyphRows>, 128> t{};
    for (auto& rows : t) rows = {0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F, 0, 0};
    for (const Glyph& g : kGlyphs) {
      std::array<std::uint8_t, kGlyphRows> rows{};
      const std::size_t n = std::strlen(g.rows);
      for (std::size_t i = 0; i < n && i < kGlyphWidth * kGlyphRows; ++i) {
        if (g.rows[i] == '#') rows[i / kGlyphWidth] |= 1 << (kGlyphWidth - 1 - i % kGlyphWidth);
      }
      t[static_cast<unsigned char>(g.c)] = rows;
    }
    return t;
  }();
  const auto u = static_cast<unsigned char>(c);
  return table[u < 128 ? u : '?'];
}

// ---- PNG ----------------------------------------------------------------------------------------

namespace png_internal {

inline std::uint32_t Crc32(std::string_view data, std::uint32_t crc = 0) {
  static const std::array<std::uint32_t, 256> table = [] {
    std::array<std::uint32_t, 256> t{};
    for (std::uint32_t n = 0; n < 256; ++n) {
      std::uint32_t c = n;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320U ^ (c >> 1) : c >> 1;
      t[n] = c;
    }
    return t;
  }();
  crc = ~crc;
  for (const char ch : data) crc = table[(crc ^ static_cast<std::uint8_t>(ch)) & 0xFF] ^ (crc >> 8);
  return ~crc;
}

inline std::uint32_t Adler32(std::string_view data) {
  std::uint32_t a = 1, b = 0;
  for (const char ch : data) {
    a = (a + static_cast<std::uint8_t>(ch)) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

// Writes bits least significant first, as deflate wants.
class BitWriter {
 public:
  void Put(std::uint32_t value, int bits) {
    for (int i = 0; i < bits; ++i) PutBit((value >> i) & 1);
  }
  // Huffman codes go most significant bit first.
  void PutCode(std::uint32_t code, int bits) {
    for (int i = bits - 1; i >= 0; --i) PutBit((code >> i) & 1);
  }
  std::string Finish() {
    if (used_ > 0) out_.push_back(static_cast<char>(current_));
    return std::move(out_);
  }

 private:
  void PutBit(std::uint32_t bit) {
    current_ |= bit << used_;
    if (++used_ == 8) {
      out_.push_back(static_cast<char>(current_));
      current_ = 0;
      used_ = 0;
    }
  }
  std::string out_;
  std::uint32_t current_ = 0;
  int used_ = 0;
};

// A literal/length symbol with deflate's fixed Huffman code (RFC 1951, 3.2.6).
inline void PutSymbol(BitWriter& w, int symbol) {
  if (symbol <= 143) {
    w.PutCode(0x30 + symbol, 8);
  } else if (symbol <= 255) {
    w.PutCode(0x190 + symbol - 144, 9);
  } else if (symbol <= 279) {
    w.PutCode(symbol - 256, 7);
  } else {
    w.PutCode(0xC0 + symbol - 280, 8);
  }
}

inline void PutMatch(BitWriter& w, int length, int distance) {
  static constexpr std::array<int, 29> kLengthBase = {3,  4,  5,  6,   7,   8,   9,   10,  11, 13,
                                                      15, 17, 19, 23,  27,  31,  35,  43,  51, 59,
                                                      67, 83, 99, 115, 131, 163, 195, 227, 258};
  static constexpr std::array<int, 29> kLengthExtra = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2,
                                                       2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0};
  static constexpr std::array<int, 30> kDistanceBase = {
      1,   2,   3,   4,   5,   7,    9,    13,   17,   25,   33,   49,   65,    97,    129,
      193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577};
  static constexpr std::array<int, 30> kDistanceExtra = {0, 0, 0,  0,  1,  1,  2,  2,  3,  3,
                                                         4, 4, 5,  5,  6,  6,  7,  7,  8,  8,
                                                         9, 9, 10, 10, 11, 11, 12, 12, 13, 13};
  int l = 28;
  while (kLengthBase[l] > length) --l;
  PutSymbol(w, 257 + l);
  w.Put(length - kLengthBase[l], kLengthExtra[l]);
  int d = 29;
  while (kDistanceBase[d] > distance) --d;
  w.PutCode(d, 5);
  w.Put(distance - kDistanceBase[d], kDistanceExtra[d]);
}

// A zlib stream of `data` in one fixed-Huffman deflate block. Matches are looked for one byte
// back, one row (`stride`) back and at the last position with the same three bytes.
inline std::string Zlib(std::string_view data, std::size_t stride) {
  constexpr int kMaxMatch = 258;
  constexpr std::size_t kWindow = 32768;
  BitWriter w;
  w.Put(1, 1);  // final block
  w.Put(1, 2);  // fixed Huffman codes
  std::vector<std::int64_t> last(1 << 15, -1);
  const auto hash = [&](std::size_t i) {
    return ((static_cast<std::uint8_t>(data[i]) << 10) ^
            (static_cast<std::uint8_t>(data[i + 1]) << 5) ^
            static_cast<std::uint8_t>(data[i + 2])) &
           0x7FFF;
  };
  const auto match_length = [&](std::size_t i, std::size_t from) {
    const std::size_t limit = std::min<std::size_t>(kMaxMatch, data.size() - i);
    std::size_t n = 0;
    while (n < limit && data[from + n] == data[i + n]) ++n;
    return static_cast<int>(n);
  };
  std::size_t i = 0;
  while (i < data.size()) {
    int best = 0;
    std::size_t best_distance = 0;
    const auto consider = [&](std::size_t distance) {
      if (distance == 0 || distance > i || distance > kWindow) return;
      const int n = match_length(i, i - distance);
      if (n > best) {
        best = n;
        best_distance = distance;
      }
    };
    consider(1);
    consider(stride);
    if (i + 2 < data.size()) {
      const std::size_t h = hash(i);
      if (last[h] >= 0) consider(i - static_cast<std::size_t>(last[h]));
      last[h] = static_cast<std::int64_t>(i);
    }
    if (best >= 3) {
      PutMatch(w, best, static_cast<int>(best_distance));
      for (std::size_t k = i + 1; k < i + best && k + 2 < data.size(); ++k) {
        last[hash(k)] = static_cast<std::int64_t>(k);
      }
      i += best;
    } else {
      PutSymbol(w, static_cast<std::uint8_t>(data[i]));
      ++i;
    }
  }
  PutSymbol(w, 256);  // end of block
  std::string out = "\x78\x01";
  out += w.Finish();
  const std::uint32_t adler = Adler32(data);
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(adler >> shift));
  return out;
}

inline void PutU32(std::string& out, std::uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>(v >> shift));
}

inline void PutChunk(std::string& out, std::string_view type, std::string_view body) {
  PutU32(out, static_cast<std::uint32_t>(body.size()));
  std::string typed(type);
  typed += body;
  out += typed;
  PutU32(out, Crc32(typed));
}

}  // namespace png_internal

// ---- Canvas -------------------------------------------------------------------------------------

struct Rgb {
  std::uint8_t r, g, b;
};

class Canvas {
 public:
  // A white canvas; colour 0 is white and 1 is black.
  Canvas(int width, int height)
      : width_(width), height_(height), pixels_(static_cast<std::size_t>(width) * height, 0) {
    AddColor({255, 255, 255});
    AddColor({0, 0, 0});
  }

  int width() const { return width_; }
  int height() const { return height_; }

  // Returns the palette index of a new colour (at most 256 colours).
  std::uint8_t AddColor(Rgb rgb) {
    palette_.push_back(rgb);
    return static_cast<std::uint8_t>(palette_.size() - 1);
  }

  void Set(int x, int y, std::uint8_t color) {
    if (x < 0 || y < 0 || x >= width_ || y >= height_) return;
    pixels_[static_cast<std::size_t>(y) * width_ + x] = color;
  }

  void FillRect(int x, int y, int w, int h, std::uint8_t color) {
    for (int yy = y; yy < y + h; ++yy) {
      for (int xx = x; xx < x + w; ++xx) Set(xx, yy, color);
    }
  }

  void Rect(int x, int y, int w, int h, std::uint8_t color) {
    FillRect(x, y, w, 1, color);
    FillRect(x, y + h - 1, w, 1, color);
    FillRect(x, y, 1, h, color);
    FillRect(x + w - 1, y, 1, h, color);
  }

  // A line `thickness` pixels wide; with dash > 0, drawn `dash` pixels on, `dash` off, the
  // pattern continuing from *phase (updated), so a dashed polyline stays regular.
  void Line(double x0, double y0, double x1, double y1, std::uint8_t color, int thickness = 1,
            int dash = 0, double* phase = nullptr) {
    const double length = std::hypot(x1 - x0, y1 - y0);
    const int steps = std::max(1, static_cast<int>(std::ceil(length * 2)));
    const double start = phase != nullptr ? *phase : 0;
    for (int s = 0; s <= steps; ++s) {
      const double t = static_cast<double>(s) / steps;
      if (dash > 0 && static_cast<long>((start + t * length) / dash) % 2 == 1) continue;
      const int x = static_cast<int>(std::lround(x0 + t * (x1 - x0)));
      const int y = static_cast<int>(std::lround(y0 + t * (y1 - y0)));
      const int from = -(thickness - 1) / 2;
      FillRect(x + from, y + from, thickness, thickness, color);
    }
    if (phase != nullptr) *phase = start + length;
  }

  // Text whose top-left corner is (x, y), each font pixel drawn as scale x scale pixels.
  void Text(int x, int y, std::string_view text, std::uint8_t color, int scale = 1) {
    for (const char c : text) {
      const auto rows = GlyphBits(c);
      for (int r = 0; r < kGlyphRows; ++r) {
        for (int col = 0; col < kGlyphWidth; ++col) {
          if (rows[r] & (1 << (kGlyphWidth - 1 - col))) {
            FillRect(x + col * scale, y + r * scale, scale, scale, color);
          }
        }
      }
      x += kCharAdvance * scale;
    }
  }

  // Text rotated a quarter turn anticlockwise (read bottom to top), starting at (x, y) = the
  // bottom-left corner of the first character.
  void TextUp(int x, int y, std::string_view text, std::uint8_t color, int scale = 1) {
    for (const char c : text) {
      const auto rows = GlyphBits(c);
      for (int r = 0; r < kGlyphRows; ++r) {
        for (int col = 0; col < kGlyphWidth; ++col) {
          if (rows[r] & (1 << (kGlyphWidth - 1 - col))) {
            FillRect(x + r * scale, y - (col + 1) * scale, scale, scale, color);
          }
        }
      }
      y -= kCharAdvance * scale;
    }
  }

  static int TextWidth(std::string_view text, int scale = 1) {
    return text.empty() ? 0 : static_cast<int>(text.size()) * kCharAdvance * scale - scale;
  }

  // The image as an 8-bit indexed-colour PNG file.
  std::string EncodePng() const {
    using png_internal::PutChunk;
    using png_internal::PutU32;
    std::string header;
    PutU32(header, static_cast<std::uint32_t>(width_));
    PutU32(header, static_cast<std::uint32_t>(height_));
    header += std::string("\x08\x03\x00\x00\x00", 5);  // 8 bits, palette, deflate, no interlace
    std::string palette;
    for (const Rgb& c : palette_) {
      palette.push_back(static_cast<char>(c.r));
      palette.push_back(static_cast<char>(c.g));
      palette.push_back(static_cast<char>(c.b));
    }
    std::string raw;
    raw.reserve(static_cast<std::size_t>(width_ + 1) * height_);
    for (int y = 0; y < height_; ++y) {
      raw.push_back(0);  // filter: none
      raw.append(reinterpret_cast<const char*>(&pixels_[static_cast<std::size_t>(y) * width_]),
                 width_);
    }
    std::string png = "\x89PNG\r\n\x1a\n";
    PutChunk(png, "IHDR", header);
    PutChunk(png, "PLTE", palette);
    PutChunk(png, "IDAT", png_internal::Zlib(raw, static_cast<std::size_t>(width_) + 1));
    PutChunk(png, "IEND", "");
    return png;
  }

 private:
  int width_, height_;
  std::vector<std::uint8_t> pixels_;
  std::vector<Rgb> palette_;
};

// ---- Charts -------------------------------------------------------------------------------------

struct Series {
  std::string name;  // in the legend
  std::uint8_t color = 1;
  int thickness = 2;
  int dash = 0;  // pixels on/off; 0 for a solid line
  bool markers = false;
  // (x, y) in increasing x; a NaN y (or y <= 0 on a log axis) breaks the line.
  std::vector<std::pair<double, double>> points;
};

// A labelled reference line across the chart at a value of one axis.
struct Rule {
  double value;
  std::string label;
  std::uint8_t color = 1;
};

struct Chart {
  std::string title;
  std::string x_label;
  std::string y_label;
  bool log_y = false;
  // The x range; NaN means from the data.
  double x_min = NAN;
  double x_max = NAN;
  // The top of the y range is the data's largest value times this (room for rule labels).
  double y_headroom = 1.0;
  // Width kept for the legend right of the plot, at least (charts stacked with the same value
  // get the same plot width, so their x axes line up).
  int min_legend_width = 0;
  std::vector<Series> series;
  std::vector<Rule> x_rules;  // vertical lines
  std::vector<Rule> y_rules;  // horizontal lines
};

namespace chart_internal {

// A tick's label, with as many decimals as the tick spacing `step` needs (0: a log axis).
inline std::string TickLabel(double v, double step = 0) {
  if (step == 0 && v != 0 && std::fabs(v) < 1) return absl::StrFormat("%g", v);
  if (std::fabs(v) >= 100000 && std::fmod(v, 1000) == 0) return absl::StrFormat("%.0fk", v / 1000);
  const int decimals = step > 0 && step < 1 ? static_cast<int>(std::ceil(-std::log10(step))) : 0;
  return absl::StrFormat("%.*f", decimals, v);
}

// "Nice" ticks (1, 2 or 5 times a power of ten) covering [lo, hi].
inline std::vector<double> LinearTicks(double lo, double hi, int target = 8) {
  const double raw = (hi - lo) / target;
  const double magnitude = std::pow(10, std::floor(std::log10(raw)));
  double step = magnitude;
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::fabs(t) < step * 1e-9 ? 0 : t);
  }
  return ticks;
}

}  // namespace chart_internal

// Draws `chart` in the rectangle (left, top, width, height) of `canvas`. Colours for the grid are
// added to the canvas's palette on first use.
inline void DrawChart(Canvas& canvas, const Chart& chart, int left, int top, int width,
                      int height) {
  using chart_internal::TickLabel;
  constexpr int kScale = 2;  // text scale
  const std::uint8_t grid = canvas.AddColor({228, 228, 228});
  const std::uint8_t minor_grid = canvas.AddColor({243, 243, 243});
  const std::uint8_t axis = canvas.AddColor({60, 60, 60});
  const int plot_left = left + 100;
  const int plot_top = top + 36;
  // The legend goes right of the plot, so it never hides a line.
  int legend_width = 0;
  for (const Series& s : chart.series) {
    legend_width = std::max(legend_width, Canvas::TextWidth(s.name, kScale));
  }
  legend_width = chart.series.empty() ? 0 : std::max(legend_width + 60, chart.min_legend_width);
  const int plot_width = width - 100 - 24 - (legend_width > 0 ? legend_width + 16 : 0);
  const int plot_height = height - 36 - 62;

  // Ranges.
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo;
  double y_lo = x_lo, y_hi = -x_lo;
  for (const Series& s : chart.series) {
    for (const auto& [x, y] : s.points) {
      x_lo = std::min(x_lo, x);
      x_hi = std::max(x_hi, x);
      if (std::isnan(y) || (chart.log_y && y <= 0)) continue;
      y_lo = std::min(y_lo, y);
      y_hi = std::max(y_hi, y);
    }
  }
  for (const Rule& r : chart.y_rules) {
    y_lo = std::min(y_lo, r.value);
    y_hi = std::max(y_hi, r.value);
  }
  if (!std::isnan(chart.x_min)) x_lo = chart.x_min;
  if (!std::isnan(chart.x_max)) x_hi = chart.x_max;
  if (!std::isfinite(x_lo)) x_lo = 0, x_hi = 1;
  if (!std::isfinite(y_lo)) y_lo = chart.log_y ? 1 : 0, y_hi = chart.log_y ? 10 : 1;
  if (x_hi <= x_lo) x_hi = x_lo + 1;
  y_hi *= chart.y_headroom;
  std::vector<double> x_ticks = chart_internal::LinearTicks(x_lo, x_hi);
  std::vector<double> y_ticks;
  std::vector<double> y_minor;
  if (chart.log_y) {
    y_lo = std::pow(10, std::floor(std::log10(y_lo)));
    y_hi = std::pow(10, std::ceil(std::log10(y_hi)));
    if (y_hi <= y_lo) y_hi = y_lo * 10;
    for (double d = y_lo; d <= y_hi * 1.0001; d *= 10) {
      y_ticks.push_back(d);
      for (int m = 2; m <= 9 && d * m < y_hi; ++m) y_minor.push_back(d * m);
    }
  } else {
    if (y_lo > 0) y_lo = 0;
    if (y_hi <= y_lo) y_hi = y_lo + 1;
    y_ticks = chart_internal::LinearTicks(y_lo, y_hi * 1.05);
    y_hi = std::max(y_hi, y_ticks.back());
  }
  const auto px = [&](double x) { return plot_left + (x - x_lo) / (x_hi - x_lo) * plot_width; };
  const auto py = [&](double y) {
    const double f =
        chart.log_y ? (std::log10(y) - std::log10(y_lo)) / (std::log10(y_hi) - std::log10(y_lo))
                    : (y - y_lo) / (y_hi - y_lo);
    return plot_top + plot_height - f * plot_height;
  };

  // Grid, ticks and labels.
  for (const double y : y_minor) {
    canvas.FillRect(plot_left, static_cast<int>(std::lround(py(y))), plot_width, 1, minor_grid);
  }
  for (const double y : y_ticks) {
    const int yy = static_cast<int>(std::lround(py(y)));
    canvas.FillRect(plot_left, yy, plot_width, 1, grid);
    const std::string label =
        TickLabel(y, chart.log_y || y_ticks.size() < 2 ? 0 : y_ticks[1] - y_ticks[0]);
    canvas.Text(plot_left - 8 - Canvas::TextWidth(label, kScale), yy - 7, label, axis, kScale);
  }
  for (const double x : x_ticks) {
    if (x < x_lo || x > x_hi) continue;
    const int xx = static_cast<int>(std::lround(px(x)));
    canvas.FillRect(xx, plot_top, 1, plot_height, grid);
    canvas.FillRect(xx, plot_top + plot_height, 1, 6, axis);
    const std::string label = TickLabel(x, x_ticks.size() > 1 ? x_ticks[1] - x_ticks[0] : 1);
    canvas.Text(xx - Canvas::TextWidth(label, kScale) / 2, plot_top + plot_height + 10, label, axis,
                kScale);
  }
  canvas.Rect(plot_left, plot_top, plot_width + 1, plot_height + 1, axis);
  canvas.Text(left + (width - Canvas::TextWidth(chart.title, kScale)) / 2, top + 8, chart.title, 1,
              kScale);
  canvas.Text(plot_left + (plot_width - Canvas::TextWidth(chart.x_label, kScale)) / 2,
              plot_top + plot_height + 36, chart.x_label, 1, kScale);
  canvas.TextUp(left + 8, plot_top + (plot_height + Canvas::TextWidth(chart.y_label, kScale)) / 2,
                chart.y_label, 1, kScale);

  // Reference lines.
  for (const Rule& r : chart.y_rules) {
    const double y = py(r.value);
    double phase = 0;
    canvas.Line(plot_left, y, plot_left + plot_width, y, r.color, 1, 6, &phase);
    canvas.Text(plot_left + 6, static_cast<int>(y) - 20, r.label, r.color, kScale);
  }
  int label_end = std::numeric_limits<int>::min();  // labels that would overlap are left out
  for (const Rule& r : chart.x_rules) {
    if (r.value < x_lo || r.value > x_hi) continue;
    const double x = px(r.value);
    double phase = 0;
    canvas.Line(x, plot_top, x, plot_top + plot_height, r.color, 1, 6, &phase);
    int label_x = static_cast<int>(x) + 5;
    const int label_width = Canvas::TextWidth(r.label, kScale);
    if (label_x + label_width > plot_left + plot_width)
      label_x = static_cast<int>(x) - 5 - label_width;
    if (label_x <= label_end) continue;
    canvas.Text(label_x, plot_top + 6, r.label, r.color, kScale);
    label_end = label_x + label_width + 6;
  }

  // Series.
  for (const Series& s : chart.series) {
    double phase = 0;
    bool have_previous = false;
    double prev_x = 0, prev_y = 0;
    for (const auto& [x, y] : s.points) {
      if (std::isnan(y) || (chart.log_y && y <= 0)) {
        have_previous = false;
        continue;
      }
      const double cx = px(x), cy = py(std::clamp(y, y_lo, y_hi));
      if (have_previous) canvas.Line(prev_x, prev_y, cx, cy, s.color, s.thickness, s.dash, &phase);
      if (s.markers) {
        canvas.FillRect(static_cast<int>(cx) - 3, static_cast<int>(cy) - 3, 7, 7, s.color);
      }
      prev_x = cx;
      prev_y = cy;
      have_previous = true;
    }
  }

  // Legend.
  const int entry_height = 22;
  const int legend_height = static_cast<int>(chart.series.size()) * entry_height + 8;
  if (!chart.series.empty()) {
    const int lx = plot_left + plot_width + 16;
    const int ly = plot_top;
    canvas.FillRect(lx, ly, legend_width, legend_height, 0);
    canvas.Rect(lx, ly, legend_width, legend_height, axis);
    for (std::size_t i = 0; i < chart.series.size(); ++i) {
      const Series& s = chart.series[i];
      const int y = ly + 6 + static_cast<int>(i) * entry_height + 8;
      double phase = 0;
      canvas.Line(lx + 8, y, lx + 44, y, s.color, s.thickness, s.dash, &phase);
      if (s.markers) canvas.FillRect(lx + 23, y - 3, 7, 7, s.color);
      canvas.Text(lx + 52, y - 7, s.name, 1, kScale);
    }
  }
}

}  // namespace chunkcache::bench::plot

#endif  // CHUNKCACHE_BENCH_LOADGEN_PLOT_H_
