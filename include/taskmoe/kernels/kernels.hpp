#pragma once
// The kernels, in one include: ISA dispatch, GEMMs (f32 / int8), elementwise and row kernels.

#include <taskmoe/kernels/isa.hpp>          // isa, active_isa, scoped_isa_override
#include <taskmoe/kernels/gemm.hpp>         // gemm_f32, gemm_int8, gemm_s8, quantize_rows_int8
#include <taskmoe/kernels/packed_gemm.hpp>  // packed_int8, packed_f32, gemm_packed_int8, gemm_packed_f32
#include <taskmoe/kernels/parallel.hpp>     // parallel_for, intra_op_threads
#include <taskmoe/kernels/elementwise.hpp>  // layer_norm, softmax, gelu, top_k, argmax, ...
