// The cache of large CPU blocks behind work_empty (work_memory.h).
#include "work_memory.h"

#include <ATen/EmptyTensor.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>

namespace fused_rnn::cpu {
namespace {

// Blocks up to glibc's largest mmap threshold (32 MB on 64-bit) are left to glibc: its
// heap reuses them once the threshold has risen to the size of the blocks the process
// frees, and the frees that raise it must still happen, or every other allocation of the
// process (torch.nn's own, for one) keeps getting fresh pages: caching blocks from 1 MB up
// made torch.nn's LSTM training 10% slower beside ours (NOTES, session 22). glibc maps
// larger blocks afresh at every call, whatever the process does: those are cached.
constexpr size_t kMinCachedBytes = (size_t(32) << 20) + 1;
// Blocks are whole multiples of this, so that requests of nearby sizes (another T, a
// varlen batch) share them.
constexpr size_t kGranule = size_t(1) << 21;

size_t cache_limit_bytes() {
  const char* mb = std::getenv("FUSED_RNN_CPU_CACHE_MB");
  if (mb == nullptr || *mb == '\0') return size_t(1024) << 20;
  char* end = nullptr;
  const long long v = std::strtoll(mb, &end, 10);
  TORCH_CHECK(end != nullptr && *end == '\0' && v >= 0,
              "FUSED_RNN_CPU_CACHE_MB must be a whole number of megabytes >= 0, got '", mb, "'");
  return static_cast<size_t>(v) << 20;
}

struct Block {
  void* ptr;
  size_t bytes;
};

class CachingCpuAllocator final : public c10::Allocator {
 public:
  CachingCpuAllocator() : limit_(cache_limit_bytes()) {}

  c10::DataPtr allocate(size_t n) override {
    if (n < kMinCachedBytes || limit_ == 0) return c10::GetCPUAllocator()->allocate(n);
    const size_t bytes = (n + kGranule - 1) / kGranule * kGranule;
    void* ptr = take(bytes);
    if (ptr == nullptr) ptr = c10::alloc_cpu(bytes);
    return {ptr, new Block{ptr, bytes}, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  void copy_data(void* dest, const void* src, size_t count) const override {
    std::memcpy(dest, src, count);
  }

  int64_t release_all() {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto freed = static_cast<int64_t>(free_bytes_);
    for (const auto& [bytes, ptr] : free_) c10::free_cpu(ptr);
    free_.clear();
    free_bytes_ = 0;
    return freed;
  }

  int64_t free_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(free_bytes_);
  }

 private:
  // A free block of `bytes` to `bytes` + 25% (a much larger one stays for a larger
  // request), or null.
  void* take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto it = free_.lower_bound(bytes);
    if (it == free_.end() || it->first > bytes + bytes / 4) return nullptr;
    void* ptr = it->second;
    free_bytes_ -= it->first;
    free_.erase(it);
    return ptr;
  }

  static void give_back(void* ctx);

  void keep(void* ptr, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      // Over the limit, the smallest blocks go first: refaulting them costs the least.
      while (!free_.empty() && free_bytes_ + bytes > limit_) {
        free_bytes_ -= free_.begin()->first;
        c10::free_cpu(free_.begin()->second);
        free_.erase(free_.begin());
      }
      if (free_bytes_ + bytes <= limit_) {
        free_.emplace(bytes, ptr);
        free_bytes_ += bytes;
        return;
      }
    }
    c10::free_cpu(ptr);
  }

  const size_t limit_;
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // by size
  size_t free_bytes_ = 0;
};

// Never destroyed: tensors freed while the process exits still return their blocks.
CachingCpuAllocator& allocator() {
  static auto* a = new CachingCpuAllocator();
  return *a;
}

void CachingCpuAllocator::give_back(void* ctx) {
  const Block* b = static_cast<Block*>(ctx);
  allocator().keep(b->ptr, b->bytes);
  delete b;
}

}  // namespace

at::Tensor work_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  TORCH_CHECK(opts.device().is_cpu(), "fused_rnn: work_empty is for CPU tensors");
  return at::detail::empty_generic(sizes, &allocator(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(opts.dtype()), std::nullopt);
}

int64_t empty_work_cache() { return allocator().release_all(); }

int64_t work_cache_bytes() { return allocator().free_bytes(); }

}  // namespace fused_rnn::cpu
