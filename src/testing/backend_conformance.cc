// The Backend conformance kit: one function per check, in the order of kChecks, over a few shared
// helpers (byte patterns, C-escaped descriptions, an exception-proof view of the backend, and reads
// that wait out the backend's visibility delay).

#include "chunkcache/testing/backend_conformance.h"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cstdint>
#include <exception>
#include <latch>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "chunkcache/chunked_cache.h"
#include "chunkcache/fault_injection_backend.h"
#include "chunkcache/options.h"
#include "chunkcache/testing/catalogue.h"

namespace chunkcache::testing {
namespace {

using namespace std::string_literals;

// Returns from the check with the first violation (or error) `expr` gives.
#define RETURN_IF_VIOLATED(expr)                        \
  do {                                                  \
    if (absl::Status status_ = (expr); !status_.ok()) { \
      return status_;                                   \
    }                                                   \
  } while (false)

using Keys = std::vector<std::string>;
using Values = std::vector<std::optional<std::string>>;

constexpr absl::Duration kMinute = absl::Minutes(1);
constexpr absl::Duration kPoll = absl::Milliseconds(5);
// The largest value the kit writes: max_item_size() values are cut to this, and a max_item_size()
// + 1 value is tried only up to kMaxOversize.
constexpr std::size_t kMaxValue = std::size_t{8} << 20;
constexpr std::size_t kMaxOversize = std::size_t{64} << 20;

absl::string_view View(std::string_view s) { return absl::string_view(s.data(), s.size()); }

// ---- Bytes: patterns, checksums and how they are shown

// `size` bytes in which every 256 in a row hold every byte value once; `salt` shifts the pattern.
std::string Pattern(std::size_t size, int salt) {
  std::string bytes(size, '\0');
  for (std::size_t i = 0; i < size; ++i) bytes[i] = static_cast<char>((i * 131 + salt) & 0xff);
  return bytes;
}

std::uint64_t Fnv1a(std::string_view bytes) {
  std::uint64_t hash = 14695981039346656037ull;
  for (char c : bytes) hash = (hash ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return hash;
}

// Bytes C-escaped and quoted; a long run shows its head and tail and its size.
std::string Show(std::string_view bytes) {
  constexpr std::size_t kHead = 16, kTail = 32;  // keys differ in their tails
  if (bytes.size() <= kHead + kTail) {
    return absl::StrCat("\"", absl::CHexEscape(View(bytes)), "\"");
  }
  return absl::StrCat("\"", absl::CHexEscape(View(bytes.substr(0, kHead))), "\"...\"",
                      absl::CHexEscape(View(bytes.substr(bytes.size() - kTail))), "\" (",
                      bytes.size(), " bytes)");
}

std::string ShowValue(const std::optional<std::string>& value) {
  return value.has_value() ? Show(*value) : "absent";
}

// What `saw` is, and where it first departs from `expected` when both are present.
std::string ShowAgainst(const std::optional<std::string>& expected,
                        const std::optional<std::string>& saw) {
  std::string shown = ShowValue(saw);
  if (!expected.has_value() || !saw.has_value()) return shown;
  const std::size_t n = std::min(expected->size(), saw->size());
  const std::size_t at =
      std::mismatch(expected->begin(), expected->begin() + n, saw->begin()).first -
      expected->begin();
  absl::StrAppend(&shown, ", ", saw->size(), " bytes where ", expected->size(),
                  " were stored, first different at byte ", at);
  return shown;
}

// The first difference between two answers to `keys`, in words.
std::string Mismatch(const Keys& keys, const Values& expected, const Values& saw) {
  if (saw.size() != expected.size()) {
    return absl::StrCat(saw.size(), " answers to ", keys.size(), " keys");
  }
  for (std::size_t i = 0; i < saw.size(); ++i) {
    if (saw[i] == expected[i]) continue;
    return absl::StrCat("answer ", i, " (key ", Show(keys[i]), ") ",
                        ShowAgainst(expected[i], saw[i]), " instead of ", ShowValue(expected[i]));
  }
  return "the expected answer";
}

// A value that names its key and carries a checksum, so that a reader can tell that it is intact
// and belongs to the key it asked for: "<key size>:<key><filler><FNV-1a of all before, in hex>".
std::string Described(std::string_view key, std::size_t filler, int salt) {
  const std::string value = absl::StrCat(key.size(), ":", View(key), Pattern(filler, salt));
  return absl::StrCat(value, absl::Hex(Fnv1a(value), absl::kZeroPad16));
}

bool IsDescribedFor(std::string_view key, std::string_view value) {
  const std::string head = absl::StrCat(key.size(), ":", View(key));
  if (value.size() < head.size() + 16 || value.substr(0, head.size()) != head) return false;
  const std::string_view body = value.substr(0, value.size() - 16);
  return value.substr(body.size()) == absl::StrCat(absl::Hex(Fnv1a(body), absl::kZeroPad16));
}

// Calls `attempt` until `done` holds for its result or `delay` has passed: the last result.
template <typename Attempt, typename Done>
auto Poll(absl::Duration delay, const Attempt& attempt, const Done& done) -> decltype(attempt()) {
  const absl::Time give_up = absl::Now() + delay;
  while (true) {
    auto result = attempt();
    if (done(result) || absl::Now() >= give_up) return result;
    absl::SleepFor(kPoll);
  }
}

// ---- The backend under test, every exception it throws turned into a status

template <typename Call>
auto Guarded(Call&& call) -> decltype(call()) {
  try {
    return call();
  } catch (const std::exception& e) {
    return absl::InternalError(absl::StrCat("the backend threw: ", e.what()));
  } catch (...) {
    return absl::InternalError("the backend threw something that is not a std::exception");
  }
}

std::vector<std::string_view> Views(const Keys& keys) { return {keys.begin(), keys.end()}; }

struct Item {
  std::string key;
  std::string value;
};

// The backend under test. When the check ends, every key it wrote (or tried to) is deleted, best
// effort: check 'delete' is the one that tests Delete.
class Subject {
 public:
  explicit Subject(std::shared_ptr<Backend> backend) : backend_(std::move(backend)) {}
  ~Subject() {
    const Keys written(written_.begin(), written_.end());
    if (!written.empty()) Delete(written).IgnoreError();
  }

  const std::shared_ptr<Backend>& shared() const { return backend_; }

  absl::StatusOr<std::size_t> MaxItemSize() {
    return Guarded([&]() -> absl::StatusOr<std::size_t> { return backend_->max_item_size(); });
  }
  absl::StatusOr<Values> Get(const Keys& keys) {
    const std::vector<std::string_view> views = Views(keys);
    return Guarded([&] { return backend_->MultiGet(views); });
  }
  absl::Status GetEach(const Keys& keys, const ItemSink& sink) {
    const std::vector<std::string_view> views = Views(keys);
    return Guarded([&] { return backend_->MultiGetEach(views, sink); });
  }
  absl::Status Set(const std::vector<Item>& items, absl::Duration ttl) {
    std::vector<KeyValue> views;
    for (const Item& item : items) {
      Written(item.key);
      views.push_back({item.key, item.value});
    }
    return Guarded([&] { return backend_->MultiSet(views, ttl); });
  }
  absl::Status Delete(const Keys& keys) {
    const std::vector<std::string_view> views = Views(keys);
    return Guarded([&] { return backend_->Delete(views); });
  }
  absl::StatusOr<bool> SetIfAbsent(std::string_view key, std::string_view value,
                                   absl::Duration ttl) {
    Written(key);
    return Guarded([&] { return backend_->SetIfAbsent(key, value, ttl); });
  }

 private:
  void Written(std::string_view key) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!key.empty()) written_.emplace(key);
  }

  std::shared_ptr<Backend> backend_;
  std::mutex mu_;
  std::set<std::string> written_;
};

// ---- One check's context: its keys, its messages, and reads that wait for visibility

class Check {
 public:
  Check(std::string_view name, std::shared_ptr<Backend> backend, const ConformanceOptions& options,
        std::string_view tag)
      : options(options),
        backend(std::move(backend)),
        name_(name),
        key_base_(absl::StrCat(View(options.key_prefix), View(tag), ":", View(name), ":")) {}

  const ConformanceOptions& options;
  Subject backend;

  const std::string& key_base() const { return key_base_; }
  std::string Key(std::string_view suffix) const { return absl::StrCat(key_base_, View(suffix)); }

  absl::Status Violation(std::string_view rule, std::string_view saw) const {
    return absl::FailedPreconditionError(absl::StrCat("backend conformance, check '", View(name_),
                                                      "': ", View(rule), "; saw ", View(saw)));
  }
  // A call that should have succeeded, or failed with `expected`, did not.
  absl::Status Failed(std::string_view rule, std::string_view call, const absl::Status& status,
                      absl::StatusCode expected = absl::StatusCode::kOk) const {
    if (status.code() == expected) return absl::OkStatus();
    return Violation(
        rule, absl::StrCat(View(call), " returned ", status.ok() ? "OK" : status.ToString()));
  }

  // Reads `keys` until `done` holds for the answer or visibility_delay has passed: the last answer.
  absl::StatusOr<Values> ReadUntil(const Keys& keys,
                                   const std::function<bool(const Values&)>& done) {
    return Poll(
        options.visibility_delay, [&] { return backend.Get(keys); },
        [&](const absl::StatusOr<Values>& got) { return !got.ok() || done(*got); });
  }

  // MultiGet answers `keys` with `expected` (once the visibility delay has passed).
  absl::Status Expect(std::string_view rule, const Keys& keys, const Values& expected) {
    absl::StatusOr<Values> got = ReadUntil(keys, [&](const Values& v) { return v == expected; });
    if (!got.ok()) return Failed(rule, "MultiGet", got.status());
    if (*got != expected) return Violation(rule, Mismatch(keys, expected, *got));
    return absl::OkStatus();
  }
  absl::Status ExpectAbsent(std::string_view rule, const Keys& keys) {
    return Expect(rule, keys, Values(keys.size()));
  }
  // None of `keys` appears, however long the visibility delay lets a write take to show.
  absl::Status ExpectNoneStored(std::string_view rule, const Keys& keys) {
    auto any = [](const Values& v) {
      return std::any_of(v.begin(), v.end(), [](const auto& x) { return x.has_value(); });
    };
    absl::StatusOr<Values> got = ReadUntil(keys, any);
    if (!got.ok()) return Failed(rule, "MultiGet", got.status());
    for (std::size_t i = 0; i < got->size() && i < keys.size(); ++i) {
      if ((*got)[i].has_value()) {
        return Violation(rule,
                         absl::StrCat("key ", Show(keys[i]), " stored as ", ShowValue((*got)[i])));
      }
    }
    return absl::OkStatus();
  }

  absl::Status Store(std::string_view rule, const std::vector<Item>& items,
                     absl::Duration ttl = kMinute) {
    return Failed(rule, "MultiSet", backend.Set(items, ttl));
  }

  // The longest value the kit stores, and the max_item_size() + 1 value if it can afford it.
  std::size_t max_item_size() const { return max_item_size_; }
  std::size_t largest_value() const { return std::min(max_item_size_, kMaxValue); }
  std::optional<std::string> Oversize() const {
    if (max_item_size_ >= kMaxOversize) return std::nullopt;
    return Pattern(max_item_size_ + 1, 13);
  }
  std::string Fit(std::string value) const {
    value.resize(std::min(value.size(), max_item_size_));
    return value;
  }
  void set_max_item_size(std::size_t size) { max_item_size_ = size; }

 private:
  std::string_view name_;
  std::string key_base_;
  std::size_t max_item_size_ = 0;
};

Keys KeysOf(const std::vector<Item>& items) {
  Keys keys;
  for (const Item& item : items) keys.push_back(item.key);
  return keys;
}

Values ValuesOf(const std::vector<Item>& items) {
  Values values;
  for (const Item& item : items) values.push_back(item.value);
  return values;
}

// The first of several threads' violations.
class FirstViolation {
 public:
  void Record(absl::Status status) {
    if (status.ok()) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (status_.ok()) status_ = std::move(status);
    failed_.store(true);
  }
  bool failed() const { return failed_.load(); }
  absl::Status status() {
    std::lock_guard<std::mutex> lock(mu_);
    return status_;
  }

 private:
  std::mutex mu_;
  absl::Status status_;
  std::atomic<bool> failed_{false};
};

void RunThreads(int count, const std::function<void(int)>& body) {
  std::vector<std::thread> threads;
  for (int t = 0; t < count; ++t) threads.emplace_back(body, t);
  for (std::thread& thread : threads) thread.join();
}

// A MultiGetEach call's sink calls, as seen.
struct Handed {
  std::size_t index;
  std::optional<ItemView> item;
  std::thread::id thread;
};

// The items of check 2 and 3: an empty value, one of every byte value, and values of several
// sizes; and a request that asks for them out of order, twice, and between absent keys.
struct OrderFixture {
  std::vector<Item> items;
  Keys request;
  Values expected;
};

OrderFixture MakeOrderFixture(const Check& c) {
  OrderFixture f;
  f.items = {{c.Key("empty"), ""},
             {c.Key("every-byte"), c.Fit(Pattern(256, 0))},
             {c.Key("longer"), c.Fit(Pattern(3000, 7))},
             {c.Key("nul"), c.Fit(std::string(1, '\0'))},
             {c.Key("ff"), c.Fit("\xff")}};
  const Keys absent = {c.Key("absent-1"), c.Key("absent-2")};
  for (int i : {1, -1, 0, 1, 4, -2, 2, 0, 3}) {
    f.request.push_back(i >= 0 ? f.items[i].key : absent[-i - 1]);
    f.expected.push_back(i >= 0 ? std::optional<std::string>(f.items[i].value) : std::nullopt);
  }
  return f;
}

// SetIfAbsent of invalid input is InvalidArgument. Unimplemented passes here: check
// 'set-if-absent' decides whether the backend may return it.
absl::Status ExpectRefused(Check& c, std::string_view rule, std::string_view what,
                           std::string_view key, std::string_view value, absl::Duration ttl) {
  absl::StatusOr<bool> set = c.backend.SetIfAbsent(key, value, ttl);
  const std::string call = absl::StrCat("SetIfAbsent", View(what));
  if (set.ok()) return c.Violation(rule, absl::StrCat(call, " returned ", *set));
  if (set.status().code() == absl::StatusCode::kUnimplemented) return absl::OkStatus();
  return c.Failed(rule, call, set.status(), absl::StatusCode::kInvalidArgument);
}

// ---- The checks

absl::Status CheckMaxItemSize(Check& c) {
  constexpr std::string_view kRule = "max_item_size() is positive and the same on every call";
  absl::StatusOr<std::size_t> first = c.backend.MaxItemSize();
  if (!first.ok()) return c.Violation(kRule, first.status().ToString());
  if (*first == 0) return c.Violation(kRule, "0");
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<std::size_t> again = c.backend.MaxItemSize();
    if (!again.ok()) return c.Violation(kRule, again.status().ToString());
    if (*again != *first) return c.Violation(kRule, absl::StrCat(*first, " then ", *again));
  }
  return absl::OkStatus();
}

absl::Status CheckMultiGetOrder(Check& c) {
  constexpr std::string_view kRule =
      "MultiGet answers one entry per key in request order, a duplicate each time, absent keys "
      "with nullopt, present ones with their exact bytes (an empty value present and empty)";
  OrderFixture f = MakeOrderFixture(c);
  RETURN_IF_VIOLATED(c.Store(kRule, f.items));
  RETURN_IF_VIOLATED(c.Expect(kRule, f.request, f.expected));
  RETURN_IF_VIOLATED(c.ExpectAbsent(kRule, {c.Key("absent-1")}));
  absl::StatusOr<Values> none = c.backend.Get({});
  if (!none.ok()) return c.Failed("MultiGet of no keys succeeds", "MultiGet({})", none.status());
  if (!none->empty()) {
    return c.Violation("MultiGet of no keys gives an empty answer",
                       absl::StrCat(none->size(), " answers"));
  }
  return absl::OkStatus();
}

absl::Status CheckMultiGetEach(Check& c) {
  constexpr std::string_view kRule =
      "MultiGetEach hands every key's item to the sink once, in key order, on the calling thread, "
      "as MultiGet answers it, with an owner for each present item";
  OrderFixture f = MakeOrderFixture(c);
  RETURN_IF_VIOLATED(c.Store(kRule, f.items));
  RETURN_IF_VIOLATED(c.Expect(kRule, f.request, f.expected));
  std::vector<Handed> handed;
  absl::Status status = c.backend.GetEach(f.request, [&](std::size_t i, std::optional<ItemView> v) {
    handed.push_back({i, std::move(v), std::this_thread::get_id()});
    return absl::OkStatus();
  });
  if (!status.ok()) return c.Failed(kRule, "MultiGetEach", status);
  if (handed.size() != f.request.size()) {
    return c.Violation(kRule,
                       absl::StrCat(handed.size(), " sink calls for ", f.request.size(), " keys"));
  }
  Values got;
  for (std::size_t n = 0; n < handed.size(); ++n) {
    const Handed& h = handed[n];
    if (h.index != n) return c.Violation(kRule, absl::StrCat("index ", h.index, " at call ", n));
    if (h.thread != std::this_thread::get_id()) {
      return c.Violation(kRule, absl::StrCat("index ", n, " handed over on another thread"));
    }
    if (h.item.has_value() && h.item->owner == nullptr) {
      return c.Violation(kRule, absl::StrCat("index ", n, " handed over with a null owner"));
    }
    got.push_back(h.item.has_value() ? std::optional<std::string>(h.item->value) : std::nullopt);
  }
  if (got != f.expected) return c.Violation(kRule, Mismatch(f.request, f.expected, got));
  // The owners keep the bytes as they were, even once the items are replaced and deleted.
  std::vector<Item> replacements = f.items;
  for (Item& item : replacements) item.value = c.Fit(Pattern(item.value.size() + 1, 99));
  RETURN_IF_VIOLATED(c.Store(kRule, replacements));
  RETURN_IF_VIOLATED(c.Failed(kRule, "Delete", c.backend.Delete(KeysOf(f.items))));
  for (std::size_t n = 0; n < handed.size(); ++n) {
    if (!handed[n].item.has_value() || handed[n].item->value == *f.expected[n]) continue;
    return c.Violation("an ItemView's owner keeps its value valid and unchanged after the call",
                       absl::StrCat("index ", n, " changed to ", Show(handed[n].item->value),
                                    " once its key was replaced and deleted"));
  }
  // A sink error stops the call, which returns it unchanged.
  RETURN_IF_VIOLATED(c.Store(kRule, f.items));
  RETURN_IF_VIOLATED(c.Expect(kRule, f.request, f.expected));
  const absl::Status stop = absl::AbortedError("conformance kit: the sink stops at index 1");
  int calls = 0;
  status = c.backend.GetEach(f.request, [&](std::size_t i, std::optional<ItemView>) {
    ++calls;
    return i == 1 ? stop : absl::OkStatus();
  });
  if (status != stop || calls != 2) {
    return c.Violation(
        "an error returned by MultiGetEach's sink stops the call and is returned unchanged",
        absl::StrCat(calls, " sink calls and ", status.ToString(), " for a sink that failed ",
                     "at its second call with ", stop.ToString()));
  }
  calls = 0;
  status = c.backend.GetEach({}, [&](std::size_t, std::optional<ItemView>) {
    ++calls;
    return absl::OkStatus();
  });
  if (!status.ok() || calls != 0) {
    return c.Violation("MultiGetEach of no keys succeeds without calling the sink",
                       absl::StrCat(calls, " sink calls and ", status.ToString()));
  }
  return absl::OkStatus();
}

absl::Status CheckReplace(Check& c) {
  constexpr std::string_view kRule = "a MultiSet over an existing key replaces its item";
  const std::string key = c.Key("k");
  const std::string a = c.Fit(Pattern(100, 5)), b = c.Fit(Pattern(5000, 6));
  RETURN_IF_VIOLATED(c.Store(kRule, {{key, c.Fit(Pattern(200, 3))}}));
  RETURN_IF_VIOLATED(c.Store(kRule, {{key, a}}));
  RETURN_IF_VIOLATED(c.Expect(kRule, {key}, {a}));

  constexpr std::string_view kAtomic =
      "while a key is replaced by turns with two values, readers see exactly one of them";
  FirstViolation violation;
  std::atomic<bool> writing{true};
  const int rounds = std::max(50, c.options.calls_per_thread);
  auto check_read = [&](const std::optional<std::string>& got) {
    if (got == a || got == b) return absl::OkStatus();
    return c.Violation(kAtomic, ShowAgainst(a, got));
  };
  RunThreads(std::max(2, c.options.threads), [&](int t) {
    if (t == 0) {
      for (int i = 1; i <= rounds && !violation.failed(); ++i) {
        violation.Record(c.Store(kAtomic, {{key, i % 2 ? b : a}}));
      }
      writing = false;
      return;
    }
    for (int i = 0; writing && !violation.failed(); ++i) {
      if (i % 2 == 0) {
        absl::StatusOr<Values> got = c.backend.Get({key});
        if (!got.ok()) violation.Record(c.Failed(kAtomic, "MultiGet", got.status()));
        if (got.ok() && got->size() == 1) violation.Record(check_read((*got)[0]));
        continue;
      }
      violation.Record(
          c.Failed(kAtomic, "MultiGetEach",
                   c.backend.GetEach({key}, [&](std::size_t, std::optional<ItemView> item) {
                     std::optional<std::string> got;
                     if (item.has_value()) got = std::string(item->value);
                     violation.Record(check_read(got));
                     return absl::OkStatus();
                   })));
    }
  });
  if (violation.failed()) return violation.status();
  return absl::OkStatus();
}

absl::Status CheckTtl(Check& c) {
  constexpr std::string_view kBad =
      "a non-positive TTL is InvalidArgument for MultiSet and SetIfAbsent and stores nothing";
  const std::string value = c.Fit("ttl");
  Keys refused;
  for (absl::Duration ttl : {absl::ZeroDuration(), -absl::Nanoseconds(1), -absl::Seconds(1),
                             -absl::InfiniteDuration()}) {
    const std::string what = absl::StrCat(" with ttl ", absl::FormatDuration(ttl));
    refused.push_back(c.Key(absl::StrCat("bad-", refused.size())));
    RETURN_IF_VIOLATED(c.Failed(kBad, "MultiSet" + what,
                                c.backend.Set({{refused.back(), value}}, ttl),
                                absl::StatusCode::kInvalidArgument));
    refused.push_back(c.Key(absl::StrCat("bad-", refused.size())));
    RETURN_IF_VIOLATED(ExpectRefused(c, kBad, what, refused.back(), value, ttl));
  }
  RETURN_IF_VIOLATED(c.ExpectNoneStored(kBad, refused));

  constexpr std::string_view kAccepted =
      "an infinite TTL (no expiry) and a positive one below the backend's granularity (1 us) are "
      "accepted";
  const std::vector<Item> infinite = {{c.Key("infinite"), value}};
  const std::vector<Item> minute = {{c.Key("minute"), value}};
  RETURN_IF_VIOLATED(c.Store(kAccepted, infinite, absl::InfiniteDuration()));
  RETURN_IF_VIOLATED(c.Store(kAccepted, minute));
  RETURN_IF_VIOLATED(c.Store(kAccepted, {{c.Key("tiny"), value}}, absl::Microseconds(1)));
  RETURN_IF_VIOLATED(c.Expect(kAccepted, {infinite[0].key, minute[0].key}, {value, value}));
  if (c.options.supports_ttl) {
    const std::string rule = absl::StrCat("an item is absent once its TTL has passed (stored with ",
                                          absl::FormatDuration(c.options.short_ttl),
                                          ", read after twice that), and present before");
    const std::vector<Item> short_lived = {{c.Key("short"), value}};
    const absl::Time stored = absl::Now();
    RETURN_IF_VIOLATED(c.Store(rule, short_lived, c.options.short_ttl));
    // The TTL runs from when the write landed, at the latest when it returned.
    const absl::Time written = absl::Now();
    absl::StatusOr<Values> now = c.ReadUntil(
        {short_lived[0].key}, [](const Values& v) { return v.size() == 1 && v[0].has_value(); });
    if (!now.ok()) return c.Failed(rule, "MultiGet", now.status());
    if (absl::Now() - stored < c.options.short_ttl / 2 && (*now != Values{value})) {
      return c.Violation(rule, absl::StrCat("at once: ", ShowValue((*now)[0])));
    }
    absl::SleepFor(written + 2 * c.options.short_ttl - absl::Now());
    RETURN_IF_VIOLATED(c.ExpectAbsent(rule, {short_lived[0].key}));
    RETURN_IF_VIOLATED(c.Expect(rule + " (a minute's TTL and an infinite one are still there)",
                                {infinite[0].key, minute[0].key}, {value, value}));
  }
  return absl::OkStatus();
}

absl::Status CheckMultiSetAllOrError(Check& c) {
  constexpr std::string_view kRule = "a successful MultiSet stores every item of the batch";
  std::vector<Item> batch;
  for (int i = 0; i < 16; ++i)
    batch.push_back({c.Key(absl::StrCat("ok-", i)), c.Fit(Pattern(i * 50, i))});
  RETURN_IF_VIOLATED(c.Store(kRule, batch));
  RETURN_IF_VIOLATED(c.Expect(kRule, KeysOf(batch), ValuesOf(batch)));

  constexpr std::string_view kAllOrError =
      "a MultiSet batch with one invalid item is InvalidArgument and stores none of its items (an "
      "existing key keeps its value)";
  const Item& old = batch[0];
  std::vector<std::vector<Item>> bad_batches = {{{c.Key("new-1"), "x"},
                                                 {c.Key("new-2"), "y"},
                                                 {old.key, c.Fit("replaced")},
                                                 {"", "an empty key"}}};
  if (std::optional<std::string> oversize = c.Oversize()) {
    bad_batches.push_back(
        {{c.Key("new-3"), "z"}, {old.key, c.Fit("replaced")}, {c.Key("new-4"), *oversize}});
  }
  for (const std::vector<Item>& bad : bad_batches) {
    absl::Status s = c.backend.Set(bad, kMinute);
    if (s.code() != absl::StatusCode::kInvalidArgument) {
      return c.Violation(kAllOrError,
                         absl::StrCat("MultiSet returned ", s.ToString(), " for a batch ",
                                      "whose last item has key ", Show(bad.back().key), " and ",
                                      bad.back().value.size(), " bytes"));
    }
    Keys added = KeysOf(bad);
    added.erase(std::remove(added.begin(), added.end(), old.key), added.end());
    added.erase(std::remove(added.begin(), added.end(), ""), added.end());
    RETURN_IF_VIOLATED(c.ExpectNoneStored(kAllOrError, added));
    RETURN_IF_VIOLATED(c.Expect(kAllOrError, {old.key}, {old.value}));
  }
  return absl::OkStatus();
}

absl::Status CheckOversizeValue(Check& c) {
  const std::string rule = absl::StrCat("a value of max_item_size() (", c.max_item_size(),
                                        ") bytes is stored and read back byte for byte");
  const std::vector<Item> largest = {{c.Key("largest"), Pattern(c.largest_value(), 9)}};
  RETURN_IF_VIOLATED(c.Store(rule, largest));
  RETURN_IF_VIOLATED(c.Expect(rule, {largest[0].key}, {largest[0].value}));
  std::optional<std::string> got;
  absl::Status s = c.backend.GetEach({largest[0].key}, [&](std::size_t, std::optional<ItemView> v) {
    if (v.has_value()) got = std::string(v->value);
    return absl::OkStatus();
  });
  RETURN_IF_VIOLATED(c.Failed(rule, "MultiGetEach", s));
  if (got != largest[0].value) {
    return c.Violation(rule, absl::StrCat("MultiGetEach: ", ShowAgainst(largest[0].value, got)));
  }
  if (std::optional<std::string> oversize = c.Oversize()) {
    constexpr std::string_view kOver =
        "a value of max_item_size() + 1 bytes is InvalidArgument for MultiSet and SetIfAbsent "
        "and is not stored";
    const Keys over = {c.Key("over-1"), c.Key("over-2")};
    RETURN_IF_VIOLATED(c.Failed(kOver, "MultiSet", c.backend.Set({{over[0], *oversize}}, kMinute),
                                absl::StatusCode::kInvalidArgument));
    RETURN_IF_VIOLATED(ExpectRefused(c, kOver, "", over[1], *oversize, kMinute));
    RETURN_IF_VIOLATED(c.ExpectNoneStored(kOver, over));
  }
  return absl::OkStatus();
}

absl::Status CheckKeys(Check& c) {
  constexpr std::string_view kEmpty =
      "the empty key is InvalidArgument for MultiSet and SetIfAbsent; MultiGet answers it absent "
      "or InvalidArgument, Delete OK or InvalidArgument";
  const std::vector<Item> present = {{c.Key("present"), c.Fit("present")}};
  RETURN_IF_VIOLATED(c.Store(kEmpty, present));
  RETURN_IF_VIOLATED(c.Failed(kEmpty, "MultiSet", c.backend.Set({{"", "v"}}, kMinute),
                              absl::StatusCode::kInvalidArgument));
  RETURN_IF_VIOLATED(ExpectRefused(c, kEmpty, "", "", "v", kMinute));
  const Keys with_empty = {"", present[0].key};
  absl::StatusOr<Values> got =
      c.ReadUntil(with_empty, [](const Values& v) { return v.size() == 2 && v[1].has_value(); });
  if (!got.ok() && got.status().code() != absl::StatusCode::kInvalidArgument) {
    return c.Failed(kEmpty, "MultiGet", got.status());
  }
  if (got.ok() && *got != Values{std::nullopt, present[0].value}) {
    return c.Violation(kEmpty, Mismatch(with_empty, {std::nullopt, present[0].value}, *got));
  }
  // NotFound is left to check 'delete' (Delete of absent keys), as it is no rule of the empty key.
  const absl::Status s = c.backend.Delete({""});
  if (!s.ok() && s.code() != absl::StatusCode::kInvalidArgument &&
      s.code() != absl::StatusCode::kNotFound) {
    return c.Failed(kEmpty, "Delete", s);
  }

  const std::string base = c.Key("");
  std::vector<Item> items;
  auto add = [&](std::string key) {
    items.push_back({std::move(key), c.Fit(Pattern(10 + items.size(), items.size()))});
  };
  add(base + Pattern(256, 0));
  // A key per byte value, and one without it: a store that folds case, trims spaces, drops NULs
  // or replaces bytes it deems invalid merges two of them.
  add(base + "1:");
  for (int b = 0; b < 256; ++b) add(base + "1:" + std::string(1, static_cast<char>(b)));
  // And a few that a store which decodes, trims or truncates keys would merge.
  for (const std::string& suffix : {"a"s, "a "s, "a  "s, "a\0"s, "a\0b"s, "\0"s, "%00"s, "/"s,
                                    "%2F"s, "\r\n"s, "\xff\xfe\x80"s, "{a}"s}) {
    add(base + suffix);
  }
  const std::size_t filler =
      c.options.max_key_size > base.size() + 2 ? c.options.max_key_size - base.size() - 1 : 1;
  const std::string longest = base + Pattern(filler, 17);  // max_key_size - 1 bytes
  for (const std::string& last : {"\0"s, "\x01"s, "\xff"s}) {
    add(longest + last);  // max_key_size bytes, different in the last byte only
  }
  add(longest);
  add(longest.substr(0, longest.size() - 1));
  const std::string rule = absl::StrCat(
      "keys of any bytes (every value 0-255) and up to ", c.options.max_key_size,
      " bytes are distinct items, even when they differ only in their last byte or their length");
  RETURN_IF_VIOLATED(c.Store(rule, items));
  RETURN_IF_VIOLATED(c.Expect(rule, KeysOf(items), ValuesOf(items)));
  RETURN_IF_VIOLATED(c.Failed(rule, "Delete", c.backend.Delete(KeysOf(items))));
  RETURN_IF_VIOLATED(c.ExpectAbsent(rule + " (and Delete removes them)", KeysOf(items)));
  return absl::OkStatus();
}

absl::Status CheckDelete(Check& c) {
  constexpr std::string_view kRule =
      "Delete succeeds for absent keys and no keys, and removes the present keys of a batch only";
  const Keys absent = {c.Key("absent-1"), c.Key("absent-2")};
  RETURN_IF_VIOLATED(c.Failed(kRule, "Delete of absent keys", c.backend.Delete(absent)));
  RETURN_IF_VIOLATED(c.Failed(kRule, "Delete({})", c.backend.Delete({})));
  std::vector<Item> items;
  for (int i = 0; i < 4; ++i) items.push_back({c.Key(absl::StrCat("p", i)), c.Fit(Pattern(20, i))});
  RETURN_IF_VIOLATED(c.Store(kRule, items));
  RETURN_IF_VIOLATED(c.Expect(kRule, KeysOf(items), ValuesOf(items)));
  absl::Status s = c.backend.Delete({items[0].key, absent[0], items[1].key});
  RETURN_IF_VIOLATED(c.Failed(kRule, "Delete of a mixed batch", s));
  const Keys keys = KeysOf(items);
  const Values expected = {std::nullopt, std::nullopt, items[2].value, items[3].value};
  RETURN_IF_VIOLATED(c.Expect(kRule, keys, expected));
  return absl::OkStatus();
}

// SetIfAbsent(key, value) returns `expected`, retried while it does not until the visibility
// delay has passed (a delete or expiry may take that long to show).
absl::Status ExpectSetIfAbsent(Check& c, std::string_view rule, const std::string& key,
                               const std::string& value, bool expected,
                               absl::Duration ttl = kMinute) {
  absl::StatusOr<bool> set = Poll(
      c.options.visibility_delay, [&] { return c.backend.SetIfAbsent(key, value, ttl); },
      [&](const absl::StatusOr<bool>& set) { return !set.ok() || *set == expected; });
  if (!set.ok()) return c.Failed(rule, "SetIfAbsent", set.status());
  if (*set == expected) return absl::OkStatus();
  return c.Violation(rule, absl::StrCat("SetIfAbsent(", Show(key), ") returned ", *set));
}

absl::Status CheckSetIfAbsent(Check& c) {
  const std::string key = c.Key("k"), v1 = c.Fit("first"), v2 = c.Fit("second");
  if (!c.options.supports_set_if_absent) {
    absl::StatusOr<bool> set = c.backend.SetIfAbsent(key, v1, kMinute);
    constexpr std::string_view kRule =
        "a backend declared without SetIfAbsent returns Unimplemented from it";
    if (set.ok()) return c.Violation(kRule, absl::StrCat("SetIfAbsent returned ", *set));
    return c.Failed(kRule, "SetIfAbsent", set.status(), absl::StatusCode::kUnimplemented);
  }
  constexpr std::string_view kRule =
      "SetIfAbsent stores an absent key (true, with any positive or infinite TTL) and leaves a "
      "present one unchanged (false), an item stored by MultiSet or with an empty value counting "
      "as present and a deleted one as absent";
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, key, v1, true));
  RETURN_IF_VIOLATED(c.Expect(kRule, {key}, {v1}));
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, key, v2, false));
  RETURN_IF_VIOLATED(c.Expect(kRule, {key}, {v1}));

  const std::string set_key = c.Key("multiset");
  RETURN_IF_VIOLATED(c.Store(kRule, {{set_key, v1}}));
  RETURN_IF_VIOLATED(c.Expect(kRule, {set_key}, {v1}));
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, set_key, v2, false));
  RETURN_IF_VIOLATED(c.Expect(kRule, {set_key}, {v1}));

  const std::string empty_key = c.Key("empty");
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, empty_key, "", true, absl::InfiniteDuration()));
  RETURN_IF_VIOLATED(c.Expect(kRule, {empty_key}, {""}));
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, empty_key, v2, false));

  RETURN_IF_VIOLATED(c.Failed(kRule, "Delete", c.backend.Delete({key})));
  RETURN_IF_VIOLATED(c.ExpectAbsent(kRule, {key}));
  RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, kRule, key, v2, true));
  RETURN_IF_VIOLATED(c.Expect(kRule, {key}, {v2}));
  return absl::OkStatus();
}

absl::Status CheckSetIfAbsentRace(Check& c) {
  constexpr int kKeys = 20;
  const int threads = std::max(2, c.options.threads);
  const std::string rule =
      absl::StrCat("of ", threads,
                   " concurrent SetIfAbsent calls on a fresh key exactly one returns true, and "
                   "its value is stored");
  auto value_of = [&](int key, int thread) { return c.Fit(absl::StrCat("k", key, "-t", thread)); };
  std::vector<std::vector<absl::StatusOr<bool>>> results(
      kKeys, std::vector<absl::StatusOr<bool>>(threads, false));
  std::barrier start(threads);
  RunThreads(threads, [&](int t) {
    for (int k = 0; k < kKeys; ++k) {
      start.arrive_and_wait();
      results[k][t] = c.backend.SetIfAbsent(c.Key(absl::StrCat(k)), value_of(k, t), kMinute);
    }
  });
  Keys keys;
  for (int k = 0; k < kKeys; ++k) {
    keys.push_back(c.Key(absl::StrCat(k)));
    int winners = 0, winner = -1;
    for (int t = 0; t < threads; ++t) {
      if (!results[k][t].ok()) return c.Failed(rule, "SetIfAbsent", results[k][t].status());
      if (*results[k][t]) ++winners, winner = t;
    }
    if (winners != 1) {
      return c.Violation(rule,
                         absl::StrCat(winners, " calls returned true for key ", Show(keys.back())));
    }
    RETURN_IF_VIOLATED(c.Expect(rule, {keys.back()}, {value_of(k, winner)}));
  }
  return absl::OkStatus();
}

absl::Status CheckSetIfAbsentExpiry(Check& c) {
  const std::string rule = absl::StrCat(
      "an expired item counts as absent: SetIfAbsent stores over it (stored with a TTL of ",
      absl::FormatDuration(c.options.short_ttl), ", tried after twice that)");
  const std::string by_set = c.Key("multiset"), by_sia = c.Key("set-if-absent");
  const std::string old_value = c.Fit("old"), new_value = c.Fit("new");
  RETURN_IF_VIOLATED(c.Store(rule, {{by_set, old_value}}, c.options.short_ttl));
  absl::StatusOr<bool> set = c.backend.SetIfAbsent(by_sia, old_value, c.options.short_ttl);
  if (!set.ok()) return c.Failed(rule, "SetIfAbsent of a fresh key", set.status());
  if (!*set) return c.Violation(rule, "false from SetIfAbsent of a fresh key");
  // Both TTLs run from when their writes landed, at the latest now.
  absl::SleepFor(2 * c.options.short_ttl);
  for (const std::string& key : {by_set, by_sia}) {
    RETURN_IF_VIOLATED(ExpectSetIfAbsent(c, rule, key, new_value, true));
    RETURN_IF_VIOLATED(c.Expect(rule, {key}, {new_value}));
  }
  return absl::OkStatus();
}

absl::Status CheckConcurrentCalls(Check& c) {
  const std::string rule =
      absl::StrCat("under ", c.options.threads,
                   " threads' concurrent mixed calls no call fails and every item "
                   "read is intact and belongs to the key asked for");
  Keys shared;
  for (int i = 0; i < 8; ++i) shared.push_back(c.Key(absl::StrCat("k", i)));
  FirstViolation violation;
  auto check_item = [&](const std::string& key, std::string_view value) {
    if (IsDescribedFor(key, value)) return absl::OkStatus();
    return c.Violation(rule, absl::StrCat("key ", Show(key), " answered with ", Show(value)));
  };
  const std::size_t kinds = c.options.supports_set_if_absent ? 5 : 4;
  const std::size_t filler = std::min<std::size_t>(2000, c.max_item_size() / 2);
  RunThreads(c.options.threads, [&](int t) {
    std::mt19937_64 random(Fnv1a(c.key_base()) + t);
    auto pick = [&](std::size_t n) { return static_cast<std::size_t>(random() % n); };
    for (int call = 0; call < c.options.calls_per_thread && !violation.failed(); ++call) {
      Keys keys;
      for (std::size_t n = 1 + pick(3); n > 0; --n) keys.push_back(shared[pick(shared.size())]);
      const std::size_t kind = pick(kinds);
      if (kind == 0) {
        absl::StatusOr<Values> got = c.backend.Get(keys);
        if (!got.ok()) violation.Record(c.Failed(rule, "MultiGet", got.status()));
        for (std::size_t i = 0; got.ok() && i < got->size() && i < keys.size(); ++i) {
          if ((*got)[i].has_value()) violation.Record(check_item(keys[i], *(*got)[i]));
        }
      } else if (kind == 1) {
        const absl::Status status =
            c.backend.GetEach(keys, [&](std::size_t i, std::optional<ItemView> item) {
              if (i < keys.size() && item.has_value()) {
                violation.Record(check_item(keys[i], item->value));
              }
              return absl::OkStatus();
            });
        violation.Record(c.Failed(rule, "MultiGetEach", status));
      } else if (kind == 2) {  // distinct keys: the contract does not say which duplicate wins
        std::sort(keys.begin(), keys.end());
        keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
        std::vector<Item> items;
        for (const std::string& key : keys) {
          items.push_back({key, Described(key, pick(filler + 1), t)});
        }
        violation.Record(c.Store(rule, items));
      } else if (kind == 3) {
        violation.Record(c.Failed(rule, "Delete", c.backend.Delete(keys)));
      } else {
        const std::string value = Described(keys[0], pick(100), t);
        violation.Record(
            c.Failed(rule, "SetIfAbsent", c.backend.SetIfAbsent(keys[0], value, kMinute).status()));
      }
    }
  });
  if (violation.failed()) return violation.status();
  return absl::OkStatus();
}

// ---- End to end: ChunkedCache over the backend

// A Get, a GetStream and a GetCompressed of `key` give `json` (GetStream: a prefix of it if it
// failed; GetCompressed: zstd bytes that hash to `*zstd_sum`, which the first one read sets) or,
// unless `must_succeed`, an error. Never other bytes.
absl::Status ReadBack(Check& c, std::string_view rule, ChunkedCache& cache, std::string_view key,
                      const std::string& json, bool must_succeed,
                      std::optional<std::uint64_t>& zstd_sum) {
  auto failed = [&](std::string_view call, const absl::Status& status) {
    return must_succeed ? c.Failed(rule, call, status) : absl::OkStatus();
  };
  absl::StatusOr<Bytes> got = cache.Get(key);
  if (!got.ok()) RETURN_IF_VIOLATED(failed("Get", got.status()));
  if (got.ok() && **got != json) {
    return c.Violation(rule, absl::StrCat("Get: ", ShowAgainst(json, **got)));
  }
  std::string streamed;
  const absl::Status status = cache.GetStream(key, [&](std::string_view piece) {
    absl::StrAppend(&streamed, View(piece));
    return absl::OkStatus();
  });
  if (!status.ok()) RETURN_IF_VIOLATED(failed("GetStream", status));
  if (!json.starts_with(streamed) || (status.ok() && streamed.size() != json.size())) {
    return c.Violation(
        rule, absl::StrCat("GetStream (", status.ToString(), "): ", ShowAgainst(json, streamed)));
  }
  absl::StatusOr<CompressedPayload> compressed = cache.GetCompressed(key);
  if (!compressed.ok()) return failed("GetCompressed", compressed.status());
  if (!zstd_sum.has_value()) zstd_sum = Fnv1a(*compressed->zstd);
  if (compressed->raw_size != json.size() || Fnv1a(*compressed->zstd) != *zstd_sum) {
    return c.Violation(rule, absl::StrCat("GetCompressed: ", compressed->zstd->size(),
                                          " zstd bytes for ", compressed->raw_size, " (",
                                          json.size(), " stored), unlike another read's"));
  }
  return absl::OkStatus();
}

// GetOrLoad of a cold key by 8 threads at once spread over `caches`: the loader, which takes
// `load_time`, runs once. Across caches a slow one could miss, stall past the whole load and its
// lease, and then win the lease again: a long load_time makes that take a stall of as long.
absl::Status LoadOnce(Check& c, std::string_view rule, std::vector<ChunkedCache*> caches,
                      std::string_view key, const std::string& json, bool exactly_once,
                      absl::Duration load_time) {
  std::atomic<int> loads{0};
  FirstViolation violation;
  constexpr int kThreads = 8;
  std::latch start(kThreads);
  RunThreads(kThreads, [&](int t) {
    start.arrive_and_wait();
    absl::StatusOr<Bytes> got = caches[t % caches.size()]->GetOrLoad(key, [&] {
      ++loads;
      absl::SleepFor(load_time);
      return absl::StatusOr<std::string>(json);
    });
    if (!got.ok()) violation.Record(c.Failed(rule, "GetOrLoad", got.status()));
    if (got.ok() && **got != json) {
      violation.Record(c.Violation(rule, "GetOrLoad returned other bytes than the loader's"));
    }
  });
  if (violation.failed()) return violation.status();
  if (loads != 1 && (exactly_once || loads == 0)) {
    return c.Violation(rule, absl::StrCat("the loader ran ", loads.load(), " times"));
  }
  return absl::OkStatus();
}

absl::Status CheckEndToEnd(Check& c) {
  const std::string json = GenerateCatalogue({.megabytes = c.options.catalogue_megabytes});
  CacheOptions options;  // Every item it writes expires within a minute.
  options.key_prefix = c.key_base();
  // Chunks of at most 1/16 of the JSON: the entry spans several of them (not only a manifest
  // holding it inline), whatever catalogue_megabytes is.
  options.chunk_size = std::min<std::size_t>(
      {c.max_item_size(), std::size_t{1} << 20, std::max<std::size_t>(json.size() / 16, 4096)});
  options.ttl = absl::Seconds(45);
  options.chunk_ttl_grace = absl::Seconds(15);
  constexpr std::string_view kKey = "catalogue";
  std::optional<std::uint64_t> zstd_sum;

  constexpr std::string_view kFaulty =
      "ChunkedCache over the backend with injected faults returns the stored bytes or an error, "
      "never other bytes";
  absl::StatusOr<std::shared_ptr<FaultInjectionBackend>> faulty =
      NewFaultInjectionBackend(c.backend.shared(), {.read_error_rate = 0.05,
                                                    .write_error_rate = 0.05,
                                                    .drop_write_rate = 0.05,
                                                    .lose_item_rate = 0.05,
                                                    .flip_byte_rate = 0.05,
                                                    .seed = 20261130});
  if (!faulty.ok()) return c.Failed(kFaulty, "NewFaultInjectionBackend", faulty.status());
  ChunkedCache faulty_cache(*faulty, options);
  for (int round = 0; round < 4; ++round) {
    faulty_cache.Put(kKey, json).IgnoreError();
    RETURN_IF_VIOLATED(ReadBack(c, kFaulty, faulty_cache, kKey, json, false, zstd_sum));
    RETURN_IF_VIOLATED(ReadBack(c, kFaulty, faulty_cache, kKey, json, false, zstd_sum));
  }

  constexpr std::string_view kClean =
      "ChunkedCache over the backend stores and returns the exact bytes (Get, GetStream, "
      "GetCompressed), Invalidate removes them, and GetOrLoad of a cold key loads once";
  ChunkedCache cache(c.backend.shared(), options);
  RETURN_IF_VIOLATED(c.Failed(kClean, "Put", cache.Put(kKey, json)));
  auto get = [&] { return cache.Get(kKey); };
  Poll(c.options.visibility_delay, get, [](const absl::StatusOr<Bytes>& got) {
    return got.status().code() != absl::StatusCode::kNotFound;
  }).IgnoreError();  // ReadBack reports the outcome
  RETURN_IF_VIOLATED(ReadBack(c, kClean, cache, kKey, json, true, zstd_sum));
  RETURN_IF_VIOLATED(c.Failed(kClean, "Invalidate", cache.Invalidate(kKey)));
  absl::StatusOr<Bytes> got =
      Poll(c.options.visibility_delay, get, [](const auto& got) { return !got.ok(); });
  if (got.status().code() != absl::StatusCode::kNotFound) {
    return c.Violation(kClean, absl::StrCat("Get after Invalidate: ",
                                            got.ok() ? "the payload" : got.status().ToString()));
  }
  RETURN_IF_VIOLATED(LoadOnce(c, kClean, {&cache}, "cold", json, true, absl::Milliseconds(50)));
  RETURN_IF_VIOLATED(c.Failed(kClean, "Invalidate", cache.Invalidate("cold")));
  if (!c.options.supports_set_if_absent) return absl::OkStatus();
  // Two caches stand for two processes: the lease, not the single-flight, keeps it to one load.
  options.lease_ttl = absl::Seconds(10);
  ChunkedCache first(c.backend.shared(), options), second(c.backend.shared(), options);
  const std::string rule = absl::StrCat(View(kClean), " (with lease_ttl set, across two caches)");
  const bool exactly_once = c.options.visibility_delay == absl::ZeroDuration();
  RETURN_IF_VIOLATED(
      LoadOnce(c, rule, {&first, &second}, "leased", json, exactly_once, absl::Milliseconds(500)));
  return c.Failed(rule, "Invalidate", first.Invalidate("leased"));
}

// ---- The catalogue of checks

struct CheckEntry {
  std::string_view name;
  absl::Status (*run)(Check&);
};

constexpr CheckEntry kChecks[] = {
    {"max-item-size", CheckMaxItemSize},
    {"multiget-order", CheckMultiGetOrder},
    {"multiget-each", CheckMultiGetEach},
    {"replace", CheckReplace},
    {"ttl", CheckTtl},
    {"multiset-all-or-error", CheckMultiSetAllOrError},
    {"oversize-value", CheckOversizeValue},
    {"keys", CheckKeys},
    {"delete", CheckDelete},
    {"set-if-absent", CheckSetIfAbsent},
    {"set-if-absent-race", CheckSetIfAbsentRace},
    {"set-if-absent-expiry", CheckSetIfAbsentExpiry},
    {"concurrent-calls", CheckConcurrentCalls},
    {"end-to-end", CheckEndToEnd},
};

bool Applies(std::string_view name, const ConformanceOptions& options) {
  if (name == "set-if-absent-race") return options.supports_set_if_absent;
  if (name == "set-if-absent-expiry") return options.supports_set_if_absent && options.supports_ttl;
  return true;
}

absl::Status CheckOptions(const ConformanceOptions& options) {
  for (const std::string& name : options.only) {
    if (std::none_of(std::begin(kChecks), std::end(kChecks),
                     [&](const CheckEntry& e) { return e.name == name; })) {
      return absl::InvalidArgumentError(
          absl::StrCat("backend conformance: no check is named \"", absl::CHexEscape(name), "\""));
    }
  }
  if (options.threads < 1 || options.calls_per_thread < 0 || options.max_key_size < 1 ||
      options.visibility_delay < absl::ZeroDuration() ||
      (options.supports_ttl && options.short_ttl <= absl::ZeroDuration())) {
    return absl::InvalidArgumentError(
        "backend conformance: ConformanceOptions need threads >= 1, calls_per_thread >= 0, "
        "max_key_size >= 1, a non-negative visibility_delay and a positive short_ttl");
  }
  return absl::OkStatus();
}

// Runs one check on a fresh backend; exceptions the backend throws are violations.
absl::Status RunCheck(const CheckEntry& entry,
                      const std::function<std::shared_ptr<Backend>()>& make,
                      const ConformanceOptions& options, std::string_view tag) {
  std::shared_ptr<Backend> backend;
  try {
    backend = make();
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(
        absl::StrCat("backend conformance: make() threw: ", e.what()));
  } catch (...) {
    return absl::InvalidArgumentError("backend conformance: make() threw");
  }
  if (backend == nullptr) {
    return absl::InvalidArgumentError("backend conformance: make() returned a null backend");
  }
  Check check(entry.name, std::move(backend), options, tag);
  try {
    absl::StatusOr<std::size_t> size = check.backend.MaxItemSize();
    if (!size.ok() || *size == 0) {
      return check.Violation("max_item_size() is positive",
                             size.ok() ? "0" : size.status().ToString());
    }
    check.set_max_item_size(*size);
    return entry.run(check);
  } catch (const std::exception& e) {
    return check.Violation("no backend call throws", absl::StrCat("an exception: ", e.what()));
  } catch (...) {
    return check.Violation("no backend call throws", "an exception");
  }
}

}  // namespace

absl::Status CheckBackendConformance(const std::function<std::shared_ptr<Backend>()>& make,
                                     const ConformanceOptions& options) {
  RETURN_IF_VIOLATED(CheckOptions(options));
  if (!make) return absl::InvalidArgumentError("backend conformance: no make() function");
  absl::BitGen random;
  const std::string tag = absl::StrFormat("%016x", absl::Uniform<std::uint64_t>(random));
  for (const CheckEntry& entry : kChecks) {
    const bool chosen = options.only.empty() || std::find(options.only.begin(), options.only.end(),
                                                          entry.name) != options.only.end();
    if (!chosen || !Applies(entry.name, options)) continue;
    RETURN_IF_VIOLATED(RunCheck(entry, make, options, tag));
  }
  return absl::OkStatus();
}

std::vector<std::string_view> ConformanceCheckNames() {
  std::vector<std::string_view> names;
  for (const CheckEntry& entry : kChecks) names.push_back(entry.name);
  return names;
}

}  // namespace chunkcache::testing
