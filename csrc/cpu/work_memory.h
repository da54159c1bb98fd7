// The layer ops' large CPU buffers, from a cache of freed blocks.
//
// glibc serves an allocation above its mmap threshold (which only grows to 32 MB) with
// fresh pages at every call: the kernel faults in and zeroes each 4 KB page on first touch.
// An LSTM inference call at T = 100, B = 64, H = 512 allocates 91 MB this way (gates alone
// 52 MB) and spent ~10% of its time in page faults (benchmarks/NOTES.md, session 22).
// Blocks over 32 MB (glibc's largest mmap threshold; smaller ones glibc's heap reuses) are
// kept when their tensor is freed and serve a later request that fits them, as torch's
// caching allocator does on the GPU: the memory a call used stays mapped for the next one.
//
// At most FUSED_RNN_CPU_CACHE_MB megabytes (default 1024; 0 turns the cache off) are kept
// free in the cache; fused_rnn.empty_cpu_cache() returns them to the system.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace fused_rnn::cpu {

// at::empty(sizes, opts) for a CPU tensor whose storage comes from the cache (any size;
// small ones pass through to torch's CPU allocator). A normal tensor: resizable, freed
// when its last reference goes, then its block returns to the cache.
at::Tensor work_empty(at::IntArrayRef sizes, const at::TensorOptions& opts);

// A gradient the backward returns (../grad_buffer.h's rule) from work_empty.
inline at::Tensor work_grad_buffer(bool wanted, at::IntArrayRef shape,
                                   const at::TensorOptions& opts) {
  return wanted ? work_empty(shape, opts) : at::empty({0}, opts);
}

// Frees every cached block; returns the bytes freed.
int64_t empty_work_cache();

// Bytes held free in the cache now.
int64_t work_cache_bytes();

}  // namespace fused_rnn::cpu
