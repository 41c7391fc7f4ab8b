#pragma once
// Runtime instruction-set detection and dispatch for the kernels.
//
// The library is compiled for the x86-64 baseline (SSE2), so code for wider instruction sets lives
// in functions marked __attribute__((target(...))) (kernels/arch/avx2.hpp, avxvnni.hpp, avx512.hpp) and
// is only ever called after active_isa() said the CPU runs it. That is what keeps a binary built
// on a new machine from dying with SIGILL on an older one.
//
// Which path runs, highest priority first:
//   1. a scoped_isa_override alive in the process (tests force every path with it);
//   2. the environment variable TASKMOE_ISA=generic|avx2|avx512, read once;
//   3. the best instruction set the CPU (and OS) supports.
// Asking for an instruction set the CPU lacks throws taskmoe::invalid_argument_error: a clear
// message instead of an illegal instruction.

#include <atomic>       // std::atomic
#include <cstdlib>      // std::getenv
#include <string>       // std::string
#include <string_view>  // std::string_view

#include <taskmoe/error.hpp>  // invalid_argument_error

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
// Per-function target attributes and __builtin_cpu_supports exist: the AVX2/AVX-512 kernels are
// compiled in. Elsewhere only the generic kernels exist and active_isa() is always generic.
#define TASKMOE_KERNELS_X86 1
#include <cpuid.h>  // __get_cpuid (f16c: see detect_cpu_features)
#if defined(__linux__)
#include <sys/syscall.h>  // SYS_arch_prctl (AMX: see detect_cpu_features)
#include <unistd.h>       // syscall
#endif
#else
#define TASKMOE_KERNELS_X86 0
#endif

namespace taskmoe {
namespace kernels {

// Ordered: a higher value is a superset of the lower ones on every CPU we dispatch to.
enum class isa : int {
  generic = 0,  // portable C++ plus xsimd at the compile-time baseline (SSE2 on x86-64)
  avx2 = 1,     // AVX2 + FMA (Haswell, Zen 1 and later)
  avx512 = 2,   // AVX-512 F + BW + VL (Skylake-SP, Ice Lake, Zen 4); VNNI used when present
};

inline const char* to_string(isa value) noexcept {
  switch (value) {
    case isa::generic: return "generic";
    case isa::avx2: return "avx2";
    case isa::avx512: return "avx512";
  }
  return "unknown";
}

// "generic" / "avx2" / "avx512" -> isa; anything else throws.
inline isa parse_isa(std::string_view name) {
  if (name == "generic") return isa::generic;
  if (name == "avx2") return isa::avx2;
  if (name == "avx512") return isa::avx512;
  throw invalid_argument_error("unknown instruction set '" + std::string(name) +
                               "' (expected generic, avx2 or avx512)");
}

// Individual CPU features the kernels care about (the OS must also save the wide registers;
// __builtin_cpu_supports checks XGETBV for that).
struct cpu_features {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avxvnni = false;  // VEX-encoded vpdpbusd at 128/256 bits (Alder Lake, Zen 5)
  // AMX-TILE + AMX-INT8 (Sapphire Rapids and later) with the tile state granted by the OS.
  bool amx_int8 = false;
  // AMD Zen 1 / Zen+ (family 17h, models below 30h): every vector integer multiply issues on one
  // pipe, so the int8 GEMM prefers adds to multiplies (arch/avx2_pairs.hpp). Measured on Zen 1
  // only; Zen 2 (17h, 30h and up) is left out until measured.
  bool one_multiply_pipe = false;
};

inline const cpu_features& detect_cpu_features() noexcept {
  static const cpu_features features = [] {
    cpu_features f;
#if TASKMOE_KERNELS_X86
    __builtin_cpu_init();  // harmless when already done; needed if called from a constructor
    f.avx2 = __builtin_cpu_supports("avx2");
    f.fma = __builtin_cpu_supports("fma");
    // CPUID leaf 1, ECX bit 29 (clang before 16 and GCC before 11 reject "f16c" in
    // __builtin_cpu_supports; the OS saving the YMM registers is implied by avx2 above).
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    f.f16c = f.avx2 && __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
    f.avx512f = __builtin_cpu_supports("avx512f");
    f.avx512bw = __builtin_cpu_supports("avx512bw");
    f.avx512vl = __builtin_cpu_supports("avx512vl");
    f.avx512vnni = __builtin_cpu_supports("avx512vnni");
    // CPUID leaf 7 sub-leaf 1, EAX bit 4 (not every compiler's __builtin_cpu_supports knows it;
    // the OS saving the YMM registers is implied by avx2).
    f.avxvnni = f.avx2 && __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 4)) != 0;
    // CPUID leaf 7 sub-leaf 0, EDX bits 24 (AMX-TILE) and 25 (AMX-INT8). Linux hands the tile
    // data state to a process only on request (arch_prctl ARCH_REQ_XCOMP_PERM = 0x1023 for
    // XFEATURE_XTILEDATA = 18, kernel 5.16+; process-wide); without the grant the first tile
    // instruction faults, so no grant (or another OS) means no AMX.
    const bool amx_cpu = f.avx512vnni && __get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) != 0 &&
                         (edx & (3u << 24)) == (3u << 24);
#if defined(__linux__) && defined(SYS_arch_prctl)
    f.amx_int8 = amx_cpu && ::syscall(SYS_arch_prctl, 0x1023L, 18L) == 0;
#else
    static_cast<void>(amx_cpu);
#endif
    // Vendor "AuthenticAMD" (EBX EDX ECX of leaf 0); family = base 0xF + extended 0x8, model =
    // extended model << 4 | base model.
    if (__get_cpuid(0, &eax, &ebx, &ecx, &edx) != 0 && ebx == 0x68747541u && edx == 0x69746e65u &&
        ecx == 0x444d4163u && __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0) {
      const unsigned family = ((eax >> 8) & 0xFu) + ((eax >> 20) & 0xFFu);
      const unsigned model = ((eax >> 4) & 0xFu) | ((eax >> 12) & 0xF0u);
      f.one_multiply_pipe = family == 0x17 && model < 0x30;
    }
#endif
    return f;
  }();
  return features;
}

// Can this CPU run kernels compiled for `value`?
inline bool cpu_supports(isa value) noexcept {
  const cpu_features& f = detect_cpu_features();
  switch (value) {
    case isa::generic: return true;
    // F16C (the float16 K/V cache's conversions) comes with every AVX2 CPU; checked all the same.
    case isa::avx2: return TASKMOE_KERNELS_X86 && f.avx2 && f.fma && f.f16c;
    case isa::avx512: return TASKMOE_KERNELS_X86 && f.avx2 && f.fma && f.f16c && f.avx512f && f.avx512bw && f.avx512vl;
  }
  return false;
}

// The best instruction set this CPU supports, ignoring overrides.
inline isa best_supported_isa() noexcept {
  if (cpu_supports(isa::avx512)) return isa::avx512;
  if (cpu_supports(isa::avx2)) return isa::avx2;
  return isa::generic;
}

namespace detail {

inline isa checked_isa(isa requested, const char* origin) {
  if (!cpu_supports(requested)) {
    throw invalid_argument_error(std::string(origin) + " requests instruction set '" +
                                 to_string(requested) + "', which this CPU does not support (best: " +
                                 to_string(best_supported_isa()) + ")");
  }
  return requested;
}

// -1: no override; otherwise an isa value. Process-wide so that an override set by a test also
// covers kernels run on worker threads.
inline std::atomic<int>& isa_override_slot() noexcept {
  static std::atomic<int> slot{-1};
  return slot;
}

// TASKMOE_ISA, parsed once. Unset or empty means "no request". An invalid value is remembered as
// an error message and thrown from every active_isa() call, so the misconfiguration cannot go
// unnoticed.
struct env_isa_request {
  bool present = false;
  isa value = isa::generic;
  std::string error;
};

inline const env_isa_request& env_request() {
  static const env_isa_request request = [] {
    env_isa_request r;
    const char* text = std::getenv("TASKMOE_ISA");
    if (text == nullptr || *text == '\0') return r;
    try {
      r.value = parse_isa(text);
      r.present = true;
      checked_isa(r.value, "TASKMOE_ISA");
    } catch (const invalid_argument_error& e) {
      r.error = std::string("TASKMOE_ISA: ") + e.what();
    }
    return r;
  }();
  return request;
}

}  // namespace detail

// The instruction set kernels dispatch to now (see the priority list at the top of this file).
inline isa active_isa() {
  const int forced = detail::isa_override_slot().load(std::memory_order_relaxed);
  if (forced >= 0) return static_cast<isa>(forced);
  const detail::env_isa_request& env = detail::env_request();
  if (!env.error.empty()) throw invalid_argument_error(env.error);
  if (env.present) return env.value;
  return best_supported_isa();
}

// Forces an instruction set for its lifetime (process-wide; nestable, restores the previous
// override on destruction). Throws if the CPU cannot run it. Meant for tests and benchmarks;
// do not race two overrides from different threads.
class scoped_isa_override {
 public:
  explicit scoped_isa_override(isa value)
      : previous_(detail::isa_override_slot().exchange(
            static_cast<int>(detail::checked_isa(value, "scoped_isa_override")))) {}
  ~scoped_isa_override() { detail::isa_override_slot().store(previous_); }
  scoped_isa_override(const scoped_isa_override&) = delete;
  scoped_isa_override& operator=(const scoped_isa_override&) = delete;

 private:
  int previous_;
};

}  // namespace kernels
}  // namespace taskmoe
