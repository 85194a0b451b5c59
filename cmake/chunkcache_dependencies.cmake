# Finds chunkcache's dependencies, all from Debian packages: through their own CMake configs,
# xxhash and hiredis through pkg-config, libcurl through CMake's FindCURL. Also included by the
# installed chunkcacheConfig.cmake.
include(CMakeFindDependencyMacro)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(absl CONFIG)
find_dependency(zstd CONFIG)
find_dependency(simdjson CONFIG)
find_dependency(CURL)
find_dependency(PkgConfig)
if(NOT TARGET chunkcache_xxhash)
  pkg_check_modules(CHUNKCACHE_XXHASH REQUIRED IMPORTED_TARGET libxxhash)
  add_library(chunkcache_xxhash INTERFACE IMPORTED)
  target_link_libraries(chunkcache_xxhash INTERFACE PkgConfig::CHUNKCACHE_XXHASH)
endif()
if(NOT TARGET chunkcache_hiredis)
  # Debian's hiredis CMake config defines no target; its pkg-config file does.
  pkg_check_modules(CHUNKCACHE_HIREDIS REQUIRED IMPORTED_TARGET hiredis)
  add_library(chunkcache_hiredis INTERFACE IMPORTED)
  target_link_libraries(chunkcache_hiredis INTERFACE PkgConfig::CHUNKCACHE_HIREDIS)
endif()
