// Helpers shared by the fuzz targets, the seed generator and tests/fuzz_regression_test.cc: the
// input format (a byte stream cut into pieces), the failure macro, and an allocation meter.
//
// Every target is a function `int chunkcache::fuzz::FuzzX(const std::uint8_t*, std::size_t)`;
// its libFuzzer entry point is compiled only without CHUNKCACHE_FUZZ_NO_ENTRY_POINTS, so the
// regression test can include several target sources in one binary and replay inputs through
// exactly the same code without libFuzzer.

#ifndef CHUNKCACHE_FUZZ_FUZZ_UTIL_H_
#define CHUNKCACHE_FUZZ_FUZZ_UTIL_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

// What a broken property does: print and abort (libFuzzer then saves the input as a crash).
// The regression test defines it before including a target, to throw instead.
#ifndef CHUNKCACHE_FUZZ_FAIL
#define CHUNKCACHE_FUZZ_FAIL(message)                                             \
  do {                                                                            \
    std::fprintf(stderr, "%s:%d: fuzz property broken: %s\n", __FILE__, __LINE__, \
                 std::string(message).c_str());                                   \
    std::abort();                                                                 \
  } while (false)
#endif

#define FUZZ_CHECK(condition, message)                                                  \
  do {                                                                                  \
    if (!(condition)) CHUNKCACHE_FUZZ_FAIL(std::string(#condition) + ": " + (message)); \
  } while (false)

// Present in sanitizer runtimes only (weak: null in a plain build).
extern "C" int __sanitizer_install_malloc_and_free_hooks(void (*malloc_hook)(const volatile void*,
                                                                             std::size_t),
                                                         void (*free_hook)(const volatile void*))
    __attribute__((weak));
extern "C" std::size_t __sanitizer_get_allocated_size(const volatile void* p) __attribute__((weak));

namespace chunkcache::fuzz {

// True if `issue` is named in the comma-separated CHUNKCACHE_FUZZ_TOLERATE: a property broken by
// a known, reported bug is then not checked, so that fuzzing goes on to find other things.
// scripts/fuzz lists the known issues; tests/fuzz_regression_test.cc holds their reproducers.
inline bool Tolerated(std::string_view issue) {
  const char* list = std::getenv("CHUNKCACHE_FUZZ_TOLERATE");
  if (list == nullptr || issue.empty()) return false;  // an empty list names no issue
  const std::string_view names(list);
  for (std::size_t start = 0; start <= names.size();) {
    std::size_t end = names.find(',', start);
    if (end == std::string_view::npos) end = names.size();
    if (names.substr(start, end - start) == issue) return true;
    start = end + 1;
  }
  return false;
}

// With CHUNKCACHE_FUZZ_VERBOSE set, targets print what each call returned (to read a reproducer).
inline void Note(std::string_view what) {
  static const bool verbose = std::getenv("CHUNKCACHE_FUZZ_VERBOSE") != nullptr;
  if (verbose) std::fprintf(stderr, "  %.*s\n", static_cast<int>(what.size()), what.data());
}

// ---- Input format ----------------------------------------------------------------------------
//
// An input is read front to back: single bytes, little-endian integers (zero once the input is
// exhausted), and pieces. A piece is a run of bytes ended by a backslash followed by any byte but
// a backslash (both consumed) or by the end of the input; a doubled backslash stands for one.
// (The same escaping as libFuzzer's FuzzedDataProvider::ConsumeRandomLengthString, but read only
// forwards, so that seeds are easy to write: see Piece() below.)

class InputReader {
 public:
  InputReader(const std::uint8_t* data, std::size_t size)
      : data_(reinterpret_cast<const char*>(data)), size_(size) {}
  explicit InputReader(std::string_view bytes) : data_(bytes.data()), size_(bytes.size()) {}

  bool empty() const { return pos_ >= size_; }

  std::uint8_t Byte() { return empty() ? 0 : static_cast<std::uint8_t>(data_[pos_++]); }

  template <typename T>
  T Integer() {
    T value = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) value |= static_cast<T>(Byte()) << (8 * i);
    return value;
  }

  std::string Piece() {
    std::string piece;
    while (!empty()) {
      // Copies up to the next backslash in one go (a byte at a time costs most of a run).
      const char* start = data_ + pos_;
      const auto* backslash = static_cast<const char*>(std::memchr(start, '\\', size_ - pos_));
      if (backslash == nullptr) {
        piece.append(start, size_ - pos_);
        pos_ = size_;
        break;
      }
      piece.append(start, backslash - start);
      pos_ += backslash - start + 1;
      if (!empty() && data_[pos_++] != '\\') break;  // "\\x": the piece ends
      piece.push_back('\\');                         // "\\\\", or a backslash at the very end
    }
    return piece;
  }

  // Every piece left.
  std::vector<std::string> Pieces() {
    std::vector<std::string> pieces;
    while (!empty()) pieces.push_back(Piece());
    return pieces;
  }

  std::string_view Rest() {
    const std::string_view rest(data_ + pos_, size_ - pos_);
    pos_ = size_;
    return rest;
  }

 private:
  const char* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

// The bytes InputReader::Piece reads back as `bytes`.
inline std::string Piece(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() + 2);
  for (const char c : bytes) {
    out.push_back(c);
    if (c == '\\') out.push_back('\\');
  }
  out += "\\|";
  return out;
}

template <typename T>
std::string LittleEndian(T value) {
  std::string out;
  for (std::size_t i = 0; i < sizeof(T); ++i) {
    out.push_back(static_cast<char>(static_cast<std::uint64_t>(value) >> (8 * i)));
  }
  return out;
}

// ---- Allocation meter ------------------------------------------------------------------------
//
// Peak bytes held by allocations made while a meter is running, for "a read never allocates more
// than max_payload_size whatever the stored bytes claim". Two sources, whichever the program has:
//   - a sanitizer runtime's malloc/free hooks (the fuzz targets: ASan), sizes as its allocator
//     reports them; every malloc, C libraries included;
//   - a counting operator new/delete the program installs (tests/fuzz_regression_test.cc in
//     builds without a sanitizer): it reports each block through CountAllocation/CountRelease
//     and calls UseCountingAllocator() before the first meter. C++ allocations only (the
//     containers a read fills), not malloc from C libraries (zstd's context, hiredis).
// Process-wide: run one meter at a time, on calls that start no threads. Without either source
// the meter measures nothing (Supported() is false).

class AllocationMeter {
 public:
  static bool Supported() { return counting_allocator() || SanitizerHooks(); }

  // For a replaced operator new/delete: whether the meter takes its counts from it.
  static void UseCountingAllocator() { counting_allocator() = true; }
  static void CountAllocation(std::size_t size) { Add(size); }
  static void CountRelease(std::size_t size) { Remove(size); }

  AllocationMeter() {
    if (!counting_allocator() && SanitizerHooks()) {
      static const bool installed = __sanitizer_install_malloc_and_free_hooks(&OnMalloc, &OnFree);
      (void)installed;
    }
    state().live = 0;
    state().peak = 0;
    state().largest = 0;
    state().running.store(true);
  }
  ~AllocationMeter() { state().running.store(false); }
  AllocationMeter(const AllocationMeter&) = delete;
  AllocationMeter& operator=(const AllocationMeter&) = delete;

  // The most bytes held at once, net of what was freed, since construction.
  std::size_t peak() const { return state().peak; }
  // The largest single allocation since construction.
  std::size_t largest() const { return state().largest; }

 private:
  struct State {
    std::atomic<bool> running{false};
    std::size_t live = 0;  // may go "negative" (wraps) when older blocks are freed
    std::size_t peak = 0;
    std::size_t largest = 0;
  };
  static State& state() {
    static State s;
    return s;
  }
  static bool& counting_allocator() {
    static bool counting = false;
    return counting;
  }
  static bool SanitizerHooks() {
    return __sanitizer_install_malloc_and_free_hooks != nullptr &&
           __sanitizer_get_allocated_size != nullptr;
  }
  static void Add(std::size_t size) {
    State& s = state();
    if (!s.running.load(std::memory_order_relaxed)) return;
    s.live += size;
    if (static_cast<std::ptrdiff_t>(s.live) > static_cast<std::ptrdiff_t>(s.peak)) s.peak = s.live;
    if (size > s.largest) s.largest = size;
  }
  static void Remove(std::size_t size) {
    State& s = state();
    if (!s.running.load(std::memory_order_relaxed)) return;
    s.live -= size;
  }
  static void OnMalloc(const volatile void*, std::size_t size) { Add(size); }
  static void OnFree(const volatile void* p) {
    if (p != nullptr && state().running.load(std::memory_order_relaxed)) {
      Remove(__sanitizer_get_allocated_size(p));
    }
  }
};

}  // namespace chunkcache::fuzz

#endif  // CHUNKCACHE_FUZZ_FUZZ_UTIL_H_
