// Owners of libcurl handles: each frees its handle with the matching libcurl call.
//
//   chunkcache::internal::CurlEasy easy(curl_easy_init());
//   chunkcache::internal::CurlHeaders headers(curl_slist_append(nullptr, "Accept: */*"));
//
// Thread safety: as libcurl's, one handle used by one thread at a time.

#ifndef CHUNKCACHE_SRC_INTERNAL_CURL_HANDLES_H_
#define CHUNKCACHE_SRC_INTERNAL_CURL_HANDLES_H_

#include <curl/curl.h>

#include <memory>

namespace chunkcache::internal {

struct CurlEasyCleanup {
  void operator()(CURL* easy) const { curl_easy_cleanup(easy); }
};
struct CurlMultiCleanup {
  void operator()(CURLM* multi) const { curl_multi_cleanup(multi); }
};
struct CurlSlistFree {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};

using CurlEasy = std::unique_ptr<CURL, CurlEasyCleanup>;
using CurlMulti = std::unique_ptr<CURLM, CurlMultiCleanup>;
using CurlHeaders = std::unique_ptr<curl_slist, CurlSlistFree>;

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_CURL_HANDLES_H_
