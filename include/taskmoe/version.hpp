#pragma once
// The one source of the library version: CMake (CMakeLists.txt) and meson (meson.build) parse the
// three defines below, so bump them here and nowhere else.

#define TASKMOE_VERSION_MAJOR 0
#define TASKMOE_VERSION_MINOR 1
#define TASKMOE_VERSION_PATCH 0

#define TASKMOE_DETAIL_STRINGIFY2(x) #x
#define TASKMOE_DETAIL_STRINGIFY(x) TASKMOE_DETAIL_STRINGIFY2(x)
#define TASKMOE_VERSION_STRING                                                   \
  TASKMOE_DETAIL_STRINGIFY(TASKMOE_VERSION_MAJOR)                                \
  "." TASKMOE_DETAIL_STRINGIFY(TASKMOE_VERSION_MINOR) "." TASKMOE_DETAIL_STRINGIFY( \
      TASKMOE_VERSION_PATCH)

namespace taskmoe {

struct version_info {
  int major;
  int minor;
  int patch;
};

// Runtime access, so a program linked against a packaged build can report what it got.
inline constexpr version_info version{TASKMOE_VERSION_MAJOR, TASKMOE_VERSION_MINOR,
                                      TASKMOE_VERSION_PATCH};
inline constexpr const char* version_string = TASKMOE_VERSION_STRING;

}  // namespace taskmoe
