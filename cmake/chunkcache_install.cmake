# Installs the library, its public headers and a CMake package so that consumers can write
# find_package(chunkcache CONFIG REQUIRED) and link chunkcache::chunkcache.
include(CMakePackageConfigHelpers)

install(TARGETS chunkcache chunkcache_testing chunkcache_tool EXPORT chunkcacheTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(DIRECTORY include/chunkcache DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_BINARY_DIR}/include/chunkcache/version.h
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/chunkcache)

set(CHUNKCACHE_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/chunkcache)
install(EXPORT chunkcacheTargets NAMESPACE chunkcache:: DESTINATION ${CHUNKCACHE_CMAKE_DIR})
configure_package_config_file(cmake/chunkcacheConfig.cmake.in
  ${PROJECT_BINARY_DIR}/chunkcacheConfig.cmake INSTALL_DESTINATION ${CHUNKCACHE_CMAKE_DIR})
write_basic_package_version_file(${PROJECT_BINARY_DIR}/chunkcacheConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES
  ${PROJECT_BINARY_DIR}/chunkcacheConfig.cmake
  ${PROJECT_BINARY_DIR}/chunkcacheConfigVersion.cmake
  cmake/chunkcache_dependencies.cmake
  DESTINATION ${CHUNKCACHE_CMAKE_DIR})

# chunkcache.pc, for builds that use pkg-config (Make, Meson): `pkg-config --cflags --libs
# chunkcache`. The public headers use these abseil libraries, so a consumer links them too.
set(public_modules absl_status absl_statusor absl_time absl_span absl_strings)
set(private_modules absl_flat_hash_map absl_hash absl_str_format absl_base absl_random_random
    libzstd simdjson libcurl hiredis libxxhash libssl libcrypto)
list(JOIN public_modules " " CHUNKCACHE_PC_REQUIRES)
if(BUILD_SHARED_LIBS)
  list(JOIN private_modules " " CHUNKCACHE_PC_REQUIRES_PRIVATE)
  set(CHUNKCACHE_PC_LIBS "")
  set(CHUNKCACHE_PC_LIBS_PRIVATE "-pthread")
else()
  # A static archive needs its dependencies on every link, not only with `pkg-config --static`.
  list(JOIN private_modules " " private)
  string(APPEND CHUNKCACHE_PC_REQUIRES " ${private}")
  set(CHUNKCACHE_PC_REQUIRES_PRIVATE "")
  set(CHUNKCACHE_PC_LIBS "-pthread")
  set(CHUNKCACHE_PC_LIBS_PRIVATE "")
endif()
# The prefix is found from the .pc file's own place (${pcfiledir}), so that a tree installed with
# `cmake --install --prefix ELSEWHERE` or moved still works.
file(RELATIVE_PATH CHUNKCACHE_PC_UP "/prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig" "/prefix")
foreach(dir LIBDIR INCLUDEDIR)
  if(IS_ABSOLUTE "${CMAKE_INSTALL_${dir}}")
    set(CHUNKCACHE_PC_${dir} "${CMAKE_INSTALL_${dir}}")
  else()
    set(CHUNKCACHE_PC_${dir} "\${prefix}/${CMAKE_INSTALL_${dir}}")
  endif()
endforeach()
configure_file(cmake/chunkcache.pc.in ${PROJECT_BINARY_DIR}/chunkcache.pc @ONLY)
# chunkcache-testing.pc: the conformance kit for a Make or Meson build's tests (it links the
# library through `Requires: chunkcache`).
configure_file(cmake/chunkcache-testing.pc.in ${PROJECT_BINARY_DIR}/chunkcache-testing.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/chunkcache.pc ${PROJECT_BINARY_DIR}/chunkcache-testing.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
