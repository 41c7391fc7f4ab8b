#pragma once
// Feature macros. The build (CMake target `taskmoe::taskmoe`, meson `taskmoe_dep`, pkg-config)
// defines them to 1 when the optional backend is found and linked; a bare include of the headers
// gets the portable fallbacks, which is always safe.

#ifndef TASKMOE_HAS_ONEDNN
#define TASKMOE_HAS_ONEDNN 0  // oneDNN GEMM backend (DNNL::dnnl)
#endif

#ifndef TASKMOE_HAS_SENTENCEPIECE
#define TASKMOE_HAS_SENTENCEPIECE 0  // SentencePiece tokenizer (libsentencepiece)
#endif

#if !defined(__cplusplus) || (__cplusplus < 201703L && !defined(_MSVC_LANG))
#error "taskmoe requires C++17 or newer"
#endif

#if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
// Both file formats are little-endian and the readers use weights in place, without byte swaps.
#error "taskmoe supports little-endian targets only"
#endif
