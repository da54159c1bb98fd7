// torch.autocast("cuda") for the fused ops: like torch.nn.LSTM's cuDNN path under
// autocast (ATen/cudnn/AutocastRNN.cpp), floating CUDA arguments are cast to float16
// and the op runs, and returns, in float16. The casts are ordinary differentiable ops
// recorded by autograd below this key, so gradients flow back in the original dtypes.
#include <ATen/ATen.h>
#include <ATen/autocast_mode.h>
#include <torch/library.h>

namespace fused_rnn::cuda {
namespace {

using Tensors7 =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;
using OptT = std::optional<at::Tensor>;

constexpr at::ScalarType kAutocastDtype = at::kHalf;

at::Tensor cast(const at::Tensor& t) {
  return at::autocast::cached_cast(kAutocastDtype, t, c10::DeviceType::CUDA);
}
OptT cast(const OptT& t) {
  return at::autocast::cached_cast(kAutocastDtype, t, c10::DeviceType::CUDA);
}

Tensors7 lstm_forward_autocast(const at::Tensor& x, const at::Tensor& w_ih,
                               const at::Tensor& w_hh, const OptT& b_ih, const OptT& b_hh,
                               const OptT& w_hr, const at::Tensor& h0, const at::Tensor& c0,
                               const OptT& lengths, bool reverse) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_rnn::lstm_forward", "")
          .typed<Tensors7(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&,
                          const OptT&, const OptT&, const at::Tensor&, const at::Tensor&,
                          const OptT&, bool)>();
  // lengths (int64 on the CPU) is not eligible for casting and passes through.
  return op.call(cast(x), cast(w_ih), cast(w_hh), cast(b_ih), cast(b_hh), cast(w_hr), cast(h0),
                 cast(c0), lengths, reverse);
}

using Tensors5 = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

Tensors5 gru_forward_autocast(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const OptT& b_ih, const OptT& b_hh, const at::Tensor& h0,
                              const OptT& lengths, bool reverse) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_rnn::gru_forward", "")
          .typed<Tensors5(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&,
                          const OptT&, const at::Tensor&, const OptT&, bool)>();
  return op.call(cast(x), cast(w_ih), cast(w_hh), cast(b_ih), cast(b_hh), cast(h0), lengths,
                 reverse);
}

using Tensors3 = std::tuple<at::Tensor, at::Tensor, at::Tensor>;

Tensors3 rnn_forward_autocast(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& w_hh,
                              const OptT& b_ih, const OptT& b_hh, const at::Tensor& h0,
                              const OptT& lengths, bool reverse, bool relu) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::DispatchKey::AutocastCUDA);
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("fused_rnn::rnn_forward", "")
          .typed<Tensors3(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&,
                          const OptT&, const at::Tensor&, const OptT&, bool, bool)>();
  return op.call(cast(x), cast(w_ih), cast(w_hh), cast(b_ih), cast(b_hh), cast(h0), lengths,
                 reverse, relu);
}

}  // namespace

TORCH_LIBRARY_IMPL(fused_rnn, AutocastCUDA, m) {
  m.impl("lstm_forward", &lstm_forward_autocast);
  m.impl("gru_forward", &gru_forward_autocast);
  m.impl("rnn_forward", &rnn_forward_autocast);
}

}  // namespace fused_rnn::cuda
