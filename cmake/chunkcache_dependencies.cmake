# Finds chunkcache's dependencies, all from Debian packages, each through its own CMake config
# (xxhash through pkg-config). Also included by the installed chunkcacheConfig.cmake.
include(CMakeFindDependencyMacro)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(absl CONFIG)
find_dependency(zstd CONFIG)
find_dependency(simdjson CONFIG)
find_dependency(PkgConfig)
if(NOT TARGET chunkcache_xxhash)
  pkg_check_modules(CHUNKCACHE_XXHASH REQUIRED IMPORTED_TARGET libxxhash)
  add_library(chunkcache_xxhash INTERFACE IMPORTED)
  target_link_libraries(chunkcache_xxhash INTERFACE PkgConfig::CHUNKCACHE_XXHASH)
endif()
