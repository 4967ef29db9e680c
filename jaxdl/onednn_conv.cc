// oneDNN's convolutions as XLA FFI handlers: the three passes of an NHWC/HWIO float32 convolution on CPU.
//
// Why: XLA:CPU runs convolutions with Eigen's spatial convolution, 1.1-15x slower per layer than the oneDNN
// kernels PyTorch calls, on the same machine (BENCHMARKS.md, CPU speed across sizes). These handlers call oneDNN on
// jaxdl's own layouts: activations NHWC (oneDNN's nhwc), kernels HWIO (oneDNN's hwio, reordered to the
// blocked layout oneDNN's kernel asks for, and back for the weight gradient).
//
//   jaxdl_onednn_conv_forward(x [N,H,W,C], w [KH,KW,C,O])        -> y  [N,Ho,Wo,O]
//   jaxdl_onednn_conv_backward_data(g [N,Ho,Wo,O], w [KH,KW,C,O]) -> dx [N,H,W,C]
//   jaxdl_onednn_conv_backward_weights(x [N,H,W,C], g [N,Ho,Wo,O]) -> dw [KH,KW,C,O]
//
// Attributes: strides, kernel dilation (XLA's: 1 = none) and padding (top, bottom, left, right). Shapes come
// from the buffers. Primitives are built once per shape and kept (oneDNN's primitives are immutable and may
// run concurrently).  Built by `python -m jaxdl.onednn build`; Python falls back to XLA's
// convolutions when this library is absent.

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using Dims = memory::dims;

namespace {

enum Pass : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

// One convolution's geometry in oneDNN's terms (logical dims NCHW / OIHW, whatever the memory layout).
struct Geometry {
  Dims src, weights, dst, strides, dilates, pad_l, pad_r;

  std::vector<int64_t> Key(Pass pass) const {
    std::vector<int64_t> key{pass};
    for (const Dims* d : {&src, &weights, &dst, &strides, &dilates, &pad_l, &pad_r}) key.insert(key.end(), d->begin(), d->end());
    return key;
  }
  memory::desc Activations(const Dims& d) const { return {d, memory::data_type::f32, memory::format_tag::nhwc}; }
  memory::desc Kernel(memory::format_tag tag) const { return {weights, memory::data_type::f32, tag}; }
};

// nhwc [N,H,W,C] buffer dims -> oneDNN's logical {N,C,H,W}; hwio [KH,KW,I,O] -> {O,I,KH,KW}.
Dims Nchw(ffi::Span<const int64_t> d) { return {d[0], d[3], d[1], d[2]}; }
Dims Oihw(ffi::Span<const int64_t> d) { return {d[3], d[2], d[0], d[1]}; }

struct Compiled {
  dnnl::primitive primitive;
  memory::desc kernel;  // the layout oneDNN's kernel uses for the weights (or their gradient)
  bool reorder;         // whether that layout differs from HWIO
};

dnnl::convolution_forward::primitive_desc ForwardDesc(const Geometry& g, dnnl::prop_kind prop) {
  dnnl::convolution_forward::desc desc(prop, dnnl::algorithm::convolution_direct, g.Activations(g.src),
                                       g.Kernel(memory::format_tag::any), g.Activations(g.dst), g.strides,
                                       g.dilates, g.pad_l, g.pad_r);
  return {desc, Engine()};
}

std::shared_ptr<const Compiled> Compile(const Geometry& g, Pass pass) {
  static std::mutex mutex;
  static std::map<std::vector<int64_t>, std::shared_ptr<const Compiled>> cache;
  const std::vector<int64_t> key = g.Key(pass);
  std::lock_guard<std::mutex> lock(mutex);
  if (auto it = cache.find(key); it != cache.end()) return it->second;

  const memory::desc hwio = g.Kernel(memory::format_tag::hwio);
  std::shared_ptr<Compiled> compiled;
  if (pass == kForward) {
    auto pd = ForwardDesc(g, dnnl::prop_kind::forward_inference);
    compiled.reset(new Compiled{dnnl::convolution_forward(pd), pd.weights_desc(), pd.weights_desc() != hwio});
  } else if (pass == kBackwardData) {
    auto hint = ForwardDesc(g, dnnl::prop_kind::forward_training);
    dnnl::convolution_backward_data::desc desc(dnnl::algorithm::convolution_direct, g.Activations(g.src),
                                               g.Kernel(memory::format_tag::any), g.Activations(g.dst), g.strides,
                                               g.dilates, g.pad_l, g.pad_r);
    dnnl::convolution_backward_data::primitive_desc pd(desc, Engine(), hint);
    compiled.reset(new Compiled{dnnl::convolution_backward_data(pd), pd.weights_desc(), pd.weights_desc() != hwio});
  } else {
    auto hint = ForwardDesc(g, dnnl::prop_kind::forward_training);
    dnnl::convolution_backward_weights::desc desc(dnnl::algorithm::convolution_direct, g.Activations(g.src),
                                                  g.Kernel(memory::format_tag::any), g.Activations(g.dst),
                                                  g.strides, g.dilates, g.pad_l, g.pad_r);
    dnnl::convolution_backward_weights::primitive_desc pd(desc, Engine(), hint);
    compiled.reset(new Compiled{dnnl::convolution_backward_weights(pd), pd.diff_weights_desc(),
                                pd.diff_weights_desc() != hwio});
  }
  cache.emplace(key, compiled);
  return compiled;
}

Geometry MakeGeometry(Dims src, Dims weights, Dims dst, int64_t stride_h, int64_t stride_w, int64_t dilation_h,
                      int64_t dilation_w, int64_t pad_top, int64_t pad_bottom, int64_t pad_left, int64_t pad_right) {
  // oneDNN counts dilation from 0 (no gaps), XLA from 1.
  return {src, weights, dst, {stride_h, stride_w}, {dilation_h - 1, dilation_w - 1}, {pad_top, pad_left},
          {pad_bottom, pad_right}};
}

// Runs one pass: `activation` is the NHWC operand (x, or g for backward data), `kernel_data` the HWIO weights
// (read, or written for the weight gradient), `out` the NHWC result (unused for the weight gradient).
ffi::Error Run(const Geometry& g, Pass pass, void* a, void* b, void* out) {
  // One convolution at a time, each on all of OpenMP's threads: XLA runs the partitions of a program sharded
  // over several CPU devices on concurrent threads, and concurrent OpenMP teams from them deadlocked (a 4-device
  // data-parallel step never finished; one at a time it runs in 0.8 s).
  static std::mutex running;
  std::lock_guard<std::mutex> one_at_a_time(running);
  try {
    auto compiled = Compile(g, pass);
    thread_local dnnl::stream stream(Engine());
    const memory::desc hwio = g.Kernel(memory::format_tag::hwio);
    auto plain = [&](const Dims& d, void* p) { return memory(g.Activations(d), Engine(), p); };
    if (pass == kBackwardWeights) {
      memory result(hwio, Engine(), out);
      memory blocked = compiled->reorder ? memory(compiled->kernel, Engine()) : result;
      compiled->primitive.execute(stream, {{DNNL_ARG_SRC, plain(g.src, a)},
                                           {DNNL_ARG_DIFF_DST, plain(g.dst, b)},
                                           {DNNL_ARG_DIFF_WEIGHTS, blocked}});
      if (compiled->reorder) dnnl::reorder(blocked, result).execute(stream, blocked, result);
    } else {
      memory weights(hwio, Engine(), b);
      if (compiled->reorder) {
        memory blocked(compiled->kernel, Engine());
        dnnl::reorder(weights, blocked).execute(stream, weights, blocked);
        weights = blocked;
      }
      if (pass == kForward) {
        compiled->primitive.execute(stream, {{DNNL_ARG_SRC, plain(g.src, a)}, {DNNL_ARG_WEIGHTS, weights},
                                             {DNNL_ARG_DST, plain(g.dst, out)}});
      } else {
        compiled->primitive.execute(stream, {{DNNL_ARG_DIFF_DST, plain(g.dst, a)}, {DNNL_ARG_WEIGHTS, weights},
                                             {DNNL_ARG_DIFF_SRC, plain(g.src, out)}});
      }
    }
    stream.wait();
  } catch (const dnnl::error& e) {
    return ffi::Error(ffi::ErrorCode::kInternal, std::string("oneDNN convolution: ") + e.what());
  }
  return ffi::Error::Success();
}

using F32 = ffi::Buffer<ffi::F32>;

#define JAXDL_CONV_ATTRS                                                                                  \
  int64_t stride_h, int64_t stride_w, int64_t dilation_h, int64_t dilation_w, int64_t pad_top, int64_t pad_bottom, \
      int64_t pad_left, int64_t pad_right
#define JAXDL_CONV_ARGS stride_h, stride_w, dilation_h, dilation_w, pad_top, pad_bottom, pad_left, pad_right

ffi::Error Forward(F32 x, F32 w, ffi::ResultBuffer<ffi::F32> y, JAXDL_CONV_ATTRS) {
  Geometry g = MakeGeometry(Nchw(x.dimensions()), Oihw(w.dimensions()), Nchw(y->dimensions()), JAXDL_CONV_ARGS);
  return Run(g, kForward, x.untyped_data(), w.untyped_data(), y->untyped_data());
}

ffi::Error BackwardData(F32 dy, F32 w, ffi::ResultBuffer<ffi::F32> dx, JAXDL_CONV_ATTRS) {
  Geometry g = MakeGeometry(Nchw(dx->dimensions()), Oihw(w.dimensions()), Nchw(dy.dimensions()), JAXDL_CONV_ARGS);
  return Run(g, kBackwardData, dy.untyped_data(), w.untyped_data(), dx->untyped_data());
}

ffi::Error BackwardWeights(F32 x, F32 dy, ffi::ResultBuffer<ffi::F32> dw, JAXDL_CONV_ATTRS) {
  Geometry g = MakeGeometry(Nchw(x.dimensions()), Oihw(dw->dimensions()), Nchw(dy.dimensions()), JAXDL_CONV_ARGS);
  return Run(g, kBackwardWeights, x.untyped_data(), dy.untyped_data(), dw->untyped_data());
}

auto Bind() {
  return ffi::Ffi::Bind().Arg<F32>().Arg<F32>().Ret<F32>()
      .Attr<int64_t>("stride_h").Attr<int64_t>("stride_w").Attr<int64_t>("dilation_h").Attr<int64_t>("dilation_w")
      .Attr<int64_t>("pad_top").Attr<int64_t>("pad_bottom").Attr<int64_t>("pad_left").Attr<int64_t>("pad_right");
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdlOnednnConvForward, Forward, Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdlOnednnConvBackwardData, BackwardData, Bind());
XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxdlOnednnConvBackwardWeights, BackwardWeights, Bind());
