// A streamed read pulled piece by piece: PiecePump runs a producer that pushes pieces into a sink
// (ChunkedCache::GetStream) on a thread of its own, and hands them to a caller that pulls them (an
// HTTP library's content provider, libcurl's read callback) one at a time.
//
//   auto pump = std::make_shared<PiecePump>([&cache](const chunkcache::PieceSink& sink) {
//     return cache.GetStream("catalogue", sink);
//   });
//   absl::StatusOr<std::string_view> first = pump->Next();  // waits for the first frame
//
// The producer stays in its sink until the caller asks for the next piece: a piece is not copied,
// it is valid until then, and the producer is never more than one piece ahead, so a stream holds
// what the producer holds for one piece (for GetStream: one frame and about one chunk).
//
// Thread safety: Next() is called by one thread at a time; the destructor must not run concurrently
// with it.

#ifndef CHUNKCACHE_EXAMPLES_COMMON_PIECE_PUMP_H_
#define CHUNKCACHE_EXAMPLES_COMMON_PIECE_PUMP_H_

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <string_view>
#include <system_error>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "chunkcache/chunked_cache.h"

namespace chunkcache::examples {

class PiecePump {
 public:
  // Pushes the pieces into `sink` in order and returns how the stream ended. It runs on the pump's
  // thread, and sees its sink return Cancelled once the pump is being destroyed.
  using Producer = std::function<absl::Status(const PieceSink& sink)>;

  // Starts `producer` at once (without a thread to run it: every Next() is ResourceExhausted).
  explicit PiecePump(Producer producer) : producer_(std::move(producer)) {
    try {
      thread_ = std::thread([this] { Produce(); });
    } catch (const std::system_error& e) {
      status_ =
          absl::ResourceExhaustedError(absl::StrCat("cannot start a stream thread: ", e.what()));
      done_ = true;
    }
  }

  // Stops the producer (its sink returns Cancelled from then on) and waits for it to return.
  ~PiecePump() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      cancelled_ = true;
    }
    changed_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

  PiecePump(const PiecePump&) = delete;
  PiecePump& operator=(const PiecePump&) = delete;

  // The next piece, never empty, valid until the next call or the destruction. At the end: an
  // empty view if the producer succeeded, else its error (if pieces went out before, the caller
  // has part of the payload only and must discard it). The end is reported to every later call.
  absl::StatusOr<std::string_view> Next() {
    std::unique_lock<std::mutex> lock(mu_);
    released_ = taken_;  // the piece handed out last is done with: the producer may go on
    changed_.notify_all();
    changed_.wait(lock, [&] { return offered_ > taken_ || done_; });
    if (offered_ > taken_) {
      taken_ = offered_;
      return piece_;
    }
    if (!status_.ok()) return status_;
    return std::string_view();
  }

  // Pieces handed out by Next() so far.
  std::uint64_t pieces() const {
    std::lock_guard<std::mutex> lock(mu_);
    return taken_;
  }

 private:
  void Produce() {
    const PieceSink sink = [this](std::string_view piece) { return Offer(piece); };
    absl::Status status;
    try {
      status = producer_(sink);
    } catch (const std::exception& e) {
      status = absl::InternalError(absl::StrCat("the stream producer threw: ", e.what()));
    } catch (...) {
      status = absl::InternalError("the stream producer threw a non-standard exception");
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      status_ = std::move(status);
      done_ = true;
    }
    changed_.notify_all();
  }

  // The sink: offers `piece` and waits until the caller is done with it.
  absl::Status Offer(std::string_view piece) {
    if (piece.empty()) return absl::OkStatus();
    std::unique_lock<std::mutex> lock(mu_);
    if (cancelled_) return absl::CancelledError("the stream's receiver is gone");
    piece_ = piece;
    ++offered_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return released_ == offered_ || cancelled_; });
    return cancelled_ ? absl::CancelledError("the stream's receiver is gone") : absl::OkStatus();
  }

  const Producer producer_;
  mutable std::mutex mu_;
  std::condition_variable changed_;  // any field below changed
  std::string_view piece_;           // the latest piece offered
  std::uint64_t offered_ = 0;        // pieces offered by the producer
  std::uint64_t taken_ = 0;          // pieces handed out by Next()
  std::uint64_t released_ = 0;       // pieces the caller is done with
  bool done_ = false;                // the producer returned
  bool cancelled_ = false;           // the pump is being destroyed
  absl::Status status_;              // what the producer returned, once done_
  std::thread thread_;               // last: started once everything above is initialized
};

}  // namespace chunkcache::examples

#endif  // CHUNKCACHE_EXAMPLES_COMMON_PIECE_PUMP_H_
