#pragma once
// The architecture's enumerations (stack, routing, norm placement, activation, positions) on
// their own: layers and moe/ need these, not the config parser and its JSON (model_config.hpp).

#include <string_view>  // std::string_view

namespace taskmoe {

enum class stack { encoder, decoder };
enum class routing { dense, token, task_target, task_pair };
enum class norm_placement { pre, post };
enum class activation { relu, gelu };
enum class positional_encoding { sinusoidal, learned };

inline constexpr std::string_view stack_name(stack s) noexcept {
  return s == stack::encoder ? "encoder" : "decoder";
}

inline constexpr std::string_view routing_name(routing r) noexcept {
  switch (r) {
    case routing::dense: return "dense";
    case routing::token: return "token";
    case routing::task_target: return "task:target";
    case routing::task_pair: return "task:pair";
  }
  return "unknown";
}

inline constexpr bool is_task_routed(routing r) noexcept {
  return r == routing::task_target || r == routing::task_pair;
}

}  // namespace taskmoe
