// Stores and reads one document through the installed library: the package works end to end.
#include <chunkcache/chunkcache.h>

#include <cstdio>

int main() {
  chunkcache::ChunkedCache cache(chunkcache::NewMemoryBackend());
  if (!cache.Put("k", R"({"a":[1,2,3]})").ok()) return 1;
  absl::StatusOr<chunkcache::Bytes> got = cache.Get("k");
  if (!got.ok() || **got != R"({"a":[1,2,3]})") return 1;
  std::printf("chunkcache %s installed and working\n", CHUNKCACHE_VERSION_STRING);
  return 0;
}
