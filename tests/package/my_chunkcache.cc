// The chunkcache tool with the consumer's own backend: dir:///ABSOLUTE/PATH is a DirectoryBackend.
//   my_chunkcache --backend=dir:///tmp/store put k file.json
#include <chunkcache/backend_url.h>
#include <chunkcache/tool.h>

#include <cstdio>
#include <string>
#include <string_view>

#include "dir_backend.h"

int main(int argc, char** argv) {
  const absl::Status registered = chunkcache::RegisterBackendScheme(
      "dir",
      [](std::string_view url, const chunkcache::BackendUrlOptions& options)
          -> absl::StatusOr<std::shared_ptr<chunkcache::Backend>> {
        std::string_view path = url.substr(url.find(':') + 1);
        if (!path.starts_with("///")) {
          return absl::InvalidArgumentError("a dir backend URL is dir:///ABSOLUTE/PATH");
        }
        path.remove_prefix(2);
        return DirectoryBackend::Open(std::string(path),
                                      options.max_item_size > 0 ? options.max_item_size : 1 << 20);
      });
  if (!registered.ok()) {
    std::fprintf(stderr, "my_chunkcache: %s\n", registered.ToString().c_str());
    return 1;
  }
  return chunkcache::RunTool(argc, argv);
}
