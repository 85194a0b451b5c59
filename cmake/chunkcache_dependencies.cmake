# Finds chunkcache's dependencies, all from Debian packages, and names the ones without a target of
# their own chunkcache::zstd, chunkcache::hiredis and chunkcache::xxhash. Also included by the
# installed chunkcacheConfig.cmake, so a consumer of a static chunkcache links the same libraries.
#
# CHUNKCACHE_STATIC_DEPENDENCIES (default OFF): link the static archives of zstd, hiredis and
# xxhash (for a self-contained binary, e.g. a Lambda bootstrap) instead of the shared libraries.
include(CMakeFindDependencyMacro)
set(THREADS_PREFER_PTHREAD_FLAG ON)
find_dependency(Threads)
find_dependency(absl CONFIG)
find_dependency(zstd CONFIG)
find_dependency(simdjson CONFIG)
find_dependency(CURL)
find_dependency(OpenSSL)
find_dependency(PkgConfig)

if(NOT DEFINED CHUNKCACHE_STATIC_DEPENDENCIES)
  set(CHUNKCACHE_STATIC_DEPENDENCIES OFF)
endif()

# Functions, so that the variables of the searches below stay out of the caller's scope; the
# imported targets they create are what is meant to be seen.

# Points the INTERFACE target `target` at pkg-config module `module`: its include directories and
# its libraries, as archives (lib*.a) when CHUNKCACHE_STATIC_DEPENDENCIES is on.
function(_chunkcache_use_pkg_config target module)
  pkg_check_modules(dep REQUIRED QUIET ${module})
  target_include_directories(${target} INTERFACE ${dep_INCLUDE_DIRS})
  if(NOT CHUNKCACHE_STATIC_DEPENDENCIES)
    target_link_libraries(${target} INTERFACE ${dep_LINK_LIBRARIES})
    return()
  endif()
  foreach(name IN LISTS dep_STATIC_LIBRARIES)
    find_library(archive NAMES lib${name}.a HINTS ${dep_STATIC_LIBRARY_DIRS} NO_CACHE)
    if(archive)
      target_link_libraries(${target} INTERFACE ${archive})
    else()
      target_link_libraries(${target} INTERFACE ${name})
    endif()
    unset(archive)
  endforeach()
endfunction()

function(_chunkcache_find_private_dependencies)
  # zstd: its own config exports a shared and a static target (and, from 1.5.6, zstd::libzstd).
  if(NOT TARGET chunkcache::zstd)
    if(CHUNKCACHE_STATIC_DEPENDENCIES AND TARGET zstd::libzstd_static)
      set(zstd_target zstd::libzstd_static)
    elseif(TARGET zstd::libzstd)
      set(zstd_target zstd::libzstd)
    elseif(TARGET zstd::libzstd_shared)
      set(zstd_target zstd::libzstd_shared)
    else()
      set(zstd_target zstd::libzstd_static)
    endif()
    add_library(chunkcache::zstd INTERFACE IMPORTED)
    target_link_libraries(chunkcache::zstd INTERFACE ${zstd_target})
  endif()

  # hiredis: upstream's CMake package (hiredis::hiredis, hiredis >= 1.1), else pkg-config (Debian
  # 12's hiredis ships a CMake file that sets variables, not a target).
  if(NOT TARGET chunkcache::hiredis)
    add_library(chunkcache::hiredis INTERFACE IMPORTED)
    find_package(hiredis CONFIG QUIET)
    if(CHUNKCACHE_STATIC_DEPENDENCIES AND TARGET hiredis::hiredis_static)
      target_link_libraries(chunkcache::hiredis INTERFACE hiredis::hiredis_static)
    elseif(TARGET hiredis::hiredis)
      target_link_libraries(chunkcache::hiredis INTERFACE hiredis::hiredis)
    else()
      _chunkcache_use_pkg_config(chunkcache::hiredis hiredis)
    endif()
  endif()

  # xxhash: upstream's CMake package (xxHash::xxhash), else pkg-config (all Debian 12 ships).
  if(NOT TARGET chunkcache::xxhash)
    add_library(chunkcache::xxhash INTERFACE IMPORTED)
    find_package(xxHash CONFIG QUIET)
    if(TARGET xxHash::xxhash)
      target_link_libraries(chunkcache::xxhash INTERFACE xxHash::xxhash)
    else()
      _chunkcache_use_pkg_config(chunkcache::xxhash libxxhash)
    endif()
  endif()
endfunction()
_chunkcache_find_private_dependencies()
