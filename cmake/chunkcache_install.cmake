# Installs the library, its public headers and a CMake package so that consumers can write
# find_package(chunkcache CONFIG REQUIRED) and link chunkcache::chunkcache.
include(CMakePackageConfigHelpers)

install(TARGETS chunkcache EXPORT chunkcacheTargets
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
