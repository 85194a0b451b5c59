#include "cache/exception_status.h"

#include <exception>
#include <new>

#include "absl/strings/str_cat.h"

namespace chunkcache::internal {

absl::Status CurrentExceptionStatus(std::string_view thrower_view, BadAlloc bad_alloc) {
  // Debian's Abseil has its own string_view type, which StrCat takes.
  const absl::string_view thrower(thrower_view.data(), thrower_view.size());
  try {
    throw;
  } catch (const std::exception& e) {
    if (bad_alloc == BadAlloc::kResourceExhausted &&
        dynamic_cast<const std::bad_alloc*>(&e) != nullptr) {
      return absl::ResourceExhaustedError(
          absl::StrCat("chunkcache: ", thrower, " ran out of memory"));
    }
    return absl::InternalError(absl::StrCat("chunkcache: ", thrower, " threw: ", e.what()));
  } catch (...) {
    return absl::InternalError(
        absl::StrCat("chunkcache: ", thrower, " threw a non-standard exception"));
  }
}

}  // namespace chunkcache::internal
