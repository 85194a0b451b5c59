// A console reporter that also remembers each benchmark's time per iteration, so a benchmark
// binary can print library/baseline ratios measured in the same run. With
// --benchmark_repetitions=N (and --benchmark_enable_random_interleaving=true, which alternates
// the benchmarks' repetitions so that a noisy moment does not land on one side only), a ratio
// compares the medians of the repetitions.
//
//   return chunkcache::bench::RunAndPrintSpeedups(
//       "against raw Redis", {{"Get vs raw GET", "BM_Get/real_time", "BM_RawGet/real_time"}});
//
// Not thread-safe: Google Benchmark calls the reporter from the thread running the benchmarks.

#ifndef CHUNKCACHE_BENCH_RATIO_REPORTER_H_
#define CHUNKCACHE_BENCH_RATIO_REPORTER_H_

#include <benchmark/benchmark.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"

namespace chunkcache::bench {

class RatioReporter : public benchmark::ConsoleReporter {
 public:
  // A library benchmark and the baseline it is compared with, by full benchmark name.
  struct Comparison {
    const char* what;
    const char* library;
    const char* baseline;
  };

  RatioReporter() : ConsoleReporter(isatty(STDOUT_FILENO) ? OO_Defaults : OO_Tabular) {}

  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.run_type == Run::RT_Iteration && !run.error_occurred) {
        seconds_[run.benchmark_name()].push_back(
            run.real_accumulated_time / static_cast<double>(std::max<int64_t>(run.iterations, 1)));
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }

  // Prints baseline time / library time for each comparison both of whose sides ran: above 1
  // the library is faster than its baseline.
  void PrintSpeedups(const char* title, const std::vector<Comparison>& comparisons) const {
    absl::PrintF("\n%s (baseline time / library time; >1 means the library is faster):\n", title);
    for (const Comparison& c : comparisons) {
      const double library = Seconds(c.library);
      const double baseline = Seconds(c.baseline);
      if (library == 0 || baseline == 0) continue;
      absl::PrintF("  %-44s %.2fx\n", c.what, baseline / library);
    }
  }

  // Seconds per iteration of a benchmark that ran, by full name (the median of its repetitions);
  // 0 if it did not run.
  double Seconds(const std::string& name) const {
    auto it = seconds_.find(name);
    if (it == seconds_.end() || it->second.empty()) return 0;
    std::vector<double> times = it->second;
    std::sort(times.begin(), times.end());
    const std::size_t n = times.size();
    return n % 2 == 1 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
  }

 private:
  std::map<std::string, std::vector<double>> seconds_;
};

// Runs the benchmarks selected on the command line through a RatioReporter, prints the speed-ups
// of `comparisons` under `title`, and shuts Google Benchmark down. Returns main's exit status.
inline int RunAndPrintSpeedups(const char* title,
                               const std::vector<RatioReporter::Comparison>& comparisons) {
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.PrintSpeedups(title, comparisons);
  benchmark::Shutdown();
  return 0;
}

}  // namespace chunkcache::bench

#endif  // CHUNKCACHE_BENCH_RATIO_REPORTER_H_
