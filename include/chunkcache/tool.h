// chunkcache/tool.h — the `chunkcache` command-line tool as a library (chunkcache::tool), so that
// a program of your own can be the tool with your own backends reachable through --backend.
//
//   // my_chunkcache.cc, linked with chunkcache::tool:
//   int main(int argc, char** argv) {
//     absl::Status registered = chunkcache::RegisterBackendScheme(
//         "dir", [](std::string_view url, const chunkcache::BackendUrlOptions& options)
//                    -> absl::StatusOr<std::shared_ptr<chunkcache::Backend>> { ... });
//     if (!registered.ok()) return 1;
//     return chunkcache::RunTool(argc, argv);
//   }
//
//   $ my_chunkcache --backend=dir:///var/cache/catalogue inspect catalogue
//
// The installed `chunkcache` binary is exactly this with no scheme registered. The commands,
// flags and exit codes are those of `chunkcache --help` (put, get, del, inspect, verify, stats,
// bench-get; exit 0 ok, 1 error, 2 corrupt entry, 3 no such key); its messages name the tool
// "chunkcache" whatever the program is called.

#ifndef CHUNKCACHE_TOOL_H_
#define CHUNKCACHE_TOOL_H_

#include "chunkcache/backend_url.h"

namespace chunkcache {

// Runs the chunkcache tool on the command line `argv` (argv[0] is the program) and returns its
// exit code, for main to return. Writes to the process's stdout and stderr (descriptors 1 and 2).
//
// - Call it from main, after registering schemes (RegisterBackendScheme) and before opening any
//   file or socket: it first fills a closed descriptor 0, 1 or 2 with a placeholder, so that a
//   backend connection never takes the place of stdout.
// - It defines absl flags (--backend, --prefix, --chunk_size, ... --format) and parses argv with
//   absl::ParseCommandLine: your program must not define flags of the same names. Each call
//   starts from the flags' defaults. As with ParseCommandLine, an unknown flag or --helpfull
//   prints a message and exits the process; --help prints the tool's help and returns 0.
// - It sets absl's program usage message (the tool's usage) on its first call, unless your
//   program set one before: --help then shows yours.
// - It flushes stdout and reports a failed write as an error exit (1), but leaves stdout open.
// - The backend of a registered scheme is made by its factory with
//   BackendUrlOptions{.timeout = --timeout, .max_item_size = the largest of --chunk_size and
//   --max_payload_size (at most 512 MiB), .ca_bundle_path = --ca_bundle}.
//
// Thread safety: call it from one thread at a time (absl's flags are process-wide); backends and
// their factories may start threads of their own.
int RunTool(int argc, char** argv);

}  // namespace chunkcache

#endif  // CHUNKCACHE_TOOL_H_
