// CurlUrl: a URL parsed by libcurl's URL API (curl_url), the parser libcurl itself connects with,
// so that what a check reads from a URL is what a connection would use.
//
//   CurlUrl url;
//   if (CURLUcode code = url.Set(text); code != CURLUE_OK) return Refused(code);
//   std::optional<std::string> host = url.Part(CURLUPART_HOST);
//
// libcurl's text for a refusal (curl_url_strerror) quotes nothing of the URL, which may hold a
// password. Thread safety: one CurlUrl per thread; libcurl's URL API needs no global init.

#ifndef CHUNKCACHE_SRC_INTERNAL_CURL_URL_H_
#define CHUNKCACHE_SRC_INTERNAL_CURL_URL_H_

#include <curl/curl.h>

#include <memory>
#include <optional>
#include <string>

namespace chunkcache::internal {

class CurlUrl {
 public:
  CurlUrl() : handle_(curl_url(), &curl_url_cleanup) {}

  // Parses `text` (curl_url_set(CURLUPART_URL) with `flags`, e.g. CURLU_NON_SUPPORT_SCHEME).
  // CURLUE_OK, or why libcurl refused it (CURLUE_OUT_OF_MEMORY if no handle could be made).
  CURLUcode Set(const std::string& text, unsigned int flags = 0) {
    if (handle_ == nullptr) return CURLUE_OUT_OF_MEMORY;
    return curl_url_set(handle_.get(), CURLUPART_URL, text.c_str(), flags);
  }

  // A part as written in the URL (not decoded), or nullopt if the URL has none.
  std::optional<std::string> Part(CURLUPart part) const {
    char* text = nullptr;
    if (handle_ == nullptr || curl_url_get(handle_.get(), part, &text, 0) != CURLUE_OK ||
        text == nullptr) {
      return std::nullopt;
    }
    std::string copy(text);
    curl_free(text);
    return copy;
  }

 private:
  std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> handle_;
};

}  // namespace chunkcache::internal

#endif  // CHUNKCACHE_SRC_INTERNAL_CURL_URL_H_
