#pragma once
// taskmoe: Task-level Mixture-of-Experts translation, header-only, CPU-first.
// The umbrella header; it includes every public header. Read top to bottom, it is the map of the
// library. (Add new public headers here; tools/amalgamate.py follows these includes.)

// Version, build features, errors.
#include <taskmoe/version.hpp>
#include <taskmoe/config.hpp>
#include <taskmoe/error.hpp>

// Tensors: element types, non-owning views, uninitialized owned storage.
#include <taskmoe/tensor/dtype.hpp>
#include <taskmoe/tensor/tensor_view.hpp>
#include <taskmoe/tensor/buffer.hpp>

// File formats: model config, safetensors, the multi-task checkpoint, the per-task .tmoe file.
#include <taskmoe/format/architecture.hpp>
#include <taskmoe/format/model_config.hpp>
#include <taskmoe/format/model_spec.hpp>
#include <taskmoe/format/safetensors.hpp>
#include <taskmoe/format/checkpoint.hpp>
#include <taskmoe/format/tmoe_metadata.hpp>
#include <taskmoe/format/tmoe.hpp>

// Kernels: ISA dispatch, f32/int8 GEMM (packed AVX2/AVX-512 kernels, oneDNN, fallbacks), elementwise ops.
#include <taskmoe/kernels/kernels.hpp>

// Runtime: weights, layers, MoE, the model with incremental decoding, search, tokenizer, facade.
#include <taskmoe/model/weights.hpp>
#include <taskmoe/layers/linear.hpp>
#include <taskmoe/layers/attention.hpp>
#include <taskmoe/layers/feed_forward.hpp>
#include <taskmoe/moe/gating.hpp>
#include <taskmoe/moe/moe_layer.hpp>
#include <taskmoe/model/transformer.hpp>
#include <taskmoe/decoding/options.hpp>
#include <taskmoe/decoding/search.hpp>
#include <taskmoe/decoding/model_session.hpp>
#include <taskmoe/tokenizer/utf8.hpp>
#include <taskmoe/tokenizer/vocabulary.hpp>
#include <taskmoe/tokenizer/sentencepiece.hpp>
#include <taskmoe/translator.hpp>
#include <taskmoe/translator_set.hpp>

// Conversion: extract a per-task .tmoe from a multi-task checkpoint (taskmoe-convert's library).
#include <taskmoe/convert/convert.hpp>
#include <taskmoe/convert/verify.hpp>
