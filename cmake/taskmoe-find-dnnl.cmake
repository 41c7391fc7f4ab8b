# Defines the imported target DNNL::dnnl without calling oneDNN's own package config: Debian's
# dnnl-config.cmake hard-requires OpenCL development files even for CPU-only use, which would make
# a plain `apt install libdnnl-dev` unusable. Sets taskmoe_DNNL_FOUND. Shared by CMakeLists.txt and
# the installed taskmoe-config.cmake so both find it the same way.
if(NOT TARGET DNNL::dnnl)
  find_path(TASKMOE_DNNL_INCLUDE_DIR NAMES oneapi/dnnl/dnnl.hpp)
  find_library(TASKMOE_DNNL_LIBRARY NAMES dnnl)
  if(TASKMOE_DNNL_INCLUDE_DIR AND TASKMOE_DNNL_LIBRARY)
    add_library(DNNL::dnnl UNKNOWN IMPORTED)
    set_target_properties(DNNL::dnnl PROPERTIES
      IMPORTED_LOCATION "${TASKMOE_DNNL_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${TASKMOE_DNNL_INCLUDE_DIR}")
  endif()
endif()
if(TARGET DNNL::dnnl)
  set(taskmoe_DNNL_FOUND TRUE)
else()
  set(taskmoe_DNNL_FOUND FALSE)
endif()

# xsimd is header-only, but Debian's xsimdTargets.cmake links a target "xtl" that exists only
# when libxtl-dev is installed; find the header ourselves and make a clean imported target.
if(NOT TARGET taskmoe::xsimd)
  find_path(TASKMOE_XSIMD_INCLUDE_DIR NAMES xsimd/xsimd.hpp)
  if(TASKMOE_XSIMD_INCLUDE_DIR)
    add_library(taskmoe::xsimd INTERFACE IMPORTED)
    set_target_properties(taskmoe::xsimd PROPERTIES
      INTERFACE_INCLUDE_DIRECTORIES "${TASKMOE_XSIMD_INCLUDE_DIR}")
  endif()
endif()
