// Copies of one shared_ptr for many threads, counted on separate cache lines. Copying a shared_ptr
// bumps the reference count in its control block: threads copying the same pointer all write one
// cache line, which bounces between their cores, so two threads make fewer copies in total than
// one. A StripedSharedPtr keeps `stripes` owners of the pointee, each with a control block of its
// own, on a cache line of its own; Get() hands the calling thread an aliasing copy of the owner of
// the CPU it runs on (CPUs equal modulo `stripes` share one). Threads running at the same time are
// on different CPUs, so their copies write different cache lines, however many threads come and
// go (see internal/cpu_stripes.h). A thread that moves to another CPU mid-copy only shares a line
// for a moment. Every copy shares ownership of the pointee: it lives until the StripedSharedPtr,
// the pointer it was made from and every copy are gone.
//
//   StripedSharedPtr<const std::string> payload(std::make_shared<const std::string>("x"), 8);
//   std::shared_ptr<const std::string> copy = payload.Get();  // copy.get() == payload.get()
//
// The owners' control blocks sit in one block of cache lines, freed when the last of them goes:
// MemoryBytes(stripes) is what one takes. use_count() of a copy counts its stripe only.
//
// Thread safety: Get() and get() may be called from any number of threads; construction and
// destruction need external synchronization, as for any object.

#ifndef CHUNKCACHE_SRC_INTERNAL_STRIPED_SHARED_PTR_H_
#define CHUNKCACHE_SRC_INTERNAL_STRIPED_SHARED_PTR_H_

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <memory>
#include <new>
#include <utility>

#include "internal/cpu_stripes.h"

namespace chunkcache::internal {

template <typename T>
class StripedSharedPtr {
 public:
  // `ptr` shared by max(1, `stripes`) owners, rounded up to a power of two.
  StripedSharedPtr(std::shared_ptr<T> ptr, std::size_t stripes)
      : ptr_(ptr.get()),
        mask_(std::bit_ceil(std::max<std::size_t>(stripes, 1)) - 1),
        owners_(std::make_unique<std::shared_ptr<T>[]>(mask_ + 1)) {
    // Line 0 holds the Header, line i + 1 the control block of owner i. Nothing below throws: the
    // allocator hands out lines of a block already allocated.
    void* block = ::operator new((mask_ + 2) * kLineBytes, kLineAlign);
    Header* header = ::new (block) Header{mask_ + 1};
    for (std::size_t i = 0; i <= mask_; ++i) {
      void* slot = static_cast<unsigned char*>(block) + kLineBytes * (i + 1);
      std::shared_ptr<std::shared_ptr<T>> owner = std::allocate_shared<std::shared_ptr<T>>(
          LineAllocator<std::shared_ptr<T>>(header, slot), ptr);
      owners_[i] = std::shared_ptr<T>(std::move(owner), ptr_);  // counted in line i + 1
    }
  }

  // A copy for the calling thread, counted on the stripe of its CPU.
  std::shared_ptr<T> Get() const { return owners_[CurrentCpu() & mask_]; }

  T* get() const { return ptr_; }
  std::size_t stripes() const { return mask_ + 1; }

  // The heap memory one with `stripes` stripes takes: the block of cache lines (with what the
  // allocator adds to a block aligned to a line) and the array of owners (with a block header).
  static std::size_t MemoryBytes(std::size_t stripes) {
    const std::size_t count = std::bit_ceil(std::max<std::size_t>(stripes, 1));
    return kLineBytes * (count + 1) + kAlignedBlockOverhead + count * sizeof(std::shared_ptr<T>) +
           kBlockOverhead;
  }

 private:
  static constexpr std::size_t kLineBytes = 64;
  static constexpr std::align_val_t kLineAlign{kLineBytes};
  // What glibc's malloc takes beyond what was asked, measured: 5 lines aligned to a line cost 448
  // bytes of heap, 17 lines 1152; a plain block costs its 16-byte header (and rounding).
  static constexpr std::size_t kAlignedBlockOverhead = 2 * kLineBytes;
  static constexpr std::size_t kBlockOverhead = 16;

  // Line 0 of a block: how many control blocks its other lines still hold.
  struct alignas(kLineBytes) Header {
    std::atomic<std::size_t> live;
  };

  // Places the one control block allocate_shared asks for in `slot`; the last one deallocated
  // frees the whole block.
  template <typename U>
  class LineAllocator {
   public:
    using value_type = U;

    LineAllocator(Header* header, void* slot) : header_(header), slot_(slot) {}
    template <typename V>
    LineAllocator(const LineAllocator<V>& other)  // NOLINT(google-explicit-constructor)
        : header_(other.header_), slot_(other.slot_) {}

    U* allocate(std::size_t n) {
      static_assert(sizeof(U) <= kLineBytes && alignof(U) <= kLineBytes,
                    "a control block must fit in one cache line");
      if (n != 1) throw std::bad_alloc();
      return static_cast<U*>(slot_);
    }
    void deallocate(U* /*block*/, std::size_t /*n*/) {
      if (header_->live.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        header_->~Header();
        ::operator delete(static_cast<void*>(header_), kLineAlign);
      }
    }

    friend bool operator==(const LineAllocator& a, const LineAllocator& b) {
      return a.slot_ == b.slot_;
    }

   private:
    template <typename V>
    friend class LineAllocator;

    Header* header_;
    void* slot_;
  };

  T* ptr_;
  std::size_t mask_;  // stripes - 1
  std::unique_ptr<std::shared_ptr<T>[]> owners_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_STRIPED_SHARED_PTR_H_
