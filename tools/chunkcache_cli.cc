// chunkcache: the operator's command-line tool for entries stored by chunkcache.
//
//   chunkcache --backend=redis://10.0.0.5:6379 put catalogue catalogue.json
//   chunkcache --backend=redis://10.0.0.5:6379 inspect catalogue
//   chunkcache --backend=redis://10.0.0.5:6379 verify catalogue   # exit 0 ok, 2 corrupt, 3 missing
//
// The tool is a library, chunkcache::tool (src/tool/chunkcache_tool.cc): a main of your own that
// registers backend schemes and then calls chunkcache::RunTool is this tool with your backends
// (chunkcache/tool.h).

#include "chunkcache/tool.h"

int main(int argc, char** argv) { return chunkcache::RunTool(argc, argv); }
