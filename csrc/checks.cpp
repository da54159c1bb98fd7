#include "checks.h"

#include <sstream>

namespace fused_rnn {

std::string shape_str(at::IntArrayRef sizes) {
  std::ostringstream s;
  s << "[";
  for (size_t k = 0; k < sizes.size(); ++k) s << (k ? ", " : "") << sizes[k];
  s << "]";
  return s.str();
}

void check_shape(const char* op, const char* name, const at::Tensor& t,
                 std::vector<int64_t> expected, const char* meaning) {
  TORCH_CHECK(t.sizes() == at::IntArrayRef(expected), op, ": ", name, " must have shape ",
              shape_str(expected), " (", meaning, "), got ", shape_str(t.sizes()));
}

void check_like(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                const at::Tensor& ref) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, " must have the dtype of ",
              ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, " must be on the device of ", ref_name,
              " (", ref.device(), "), got ", t.device());
}

void check_input(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 3, op, ": x must be 3-D [seq_len, batch, input_size], got ",
              x.dim(), "-D with shape ", shape_str(x.sizes()));
  const auto dt = x.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble || dt == at::kBFloat16 ||
                  (dt == at::kHalf && x.is_cuda());
  TORCH_CHECK(ok, op, ": x must be float32, float64 or bfloat16 (float16 on CUDA), got ", dt);
  TORCH_CHECK(x.is_cpu() || x.is_cuda(), op, ": x must be on a CPU or CUDA device, got ",
              x.device());
}

void check_lengths(const char* op, const std::optional<at::Tensor>& lengths, int64_t T,
                   int64_t B) {
  if (!lengths.has_value() || !lengths->defined()) return;
  const at::Tensor& l = *lengths;
  TORCH_CHECK(l.scalar_type() == at::kLong && l.is_cpu(), op,
              ": lengths must be an int64 tensor on the CPU, got ", l.scalar_type(), " on ",
              l.device());
  check_shape(op, "lengths", l, {B}, "one length per batch row");
  const int64_t* p = l.contiguous().data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    TORCH_CHECK(p[b] >= 0 && p[b] <= T, op, ": lengths[", b, "] = ", p[b],
                " is outside [0, seq_len = ", T, "]");
  }
}

std::vector<int64_t> rows_active(const std::optional<at::Tensor>& lengths, int64_t T,
                                 int64_t B) {
  std::vector<int64_t> rows(T, B);
  if (!lengths.has_value() || !lengths->defined()) return rows;
  const at::Tensor l = lengths->contiguous();
  const int64_t* p = l.data_ptr<int64_t>();
  for (int64_t t = 0; t < T; ++t) {
    int64_t r = 0;
    for (int64_t b = 0; b < B; ++b)
      if (p[b] > t) r = b + 1;
    rows[t] = r;
  }
  return rows;
}

}  // namespace fused_rnn
