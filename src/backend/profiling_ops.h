// ProfilingOps: an Ops decorator that measures where a step's time goes. Every call is forwarded
// to the wrapped backend and followed by synchronize(), and its wall time is added to one of a
// few categories (GEMMs, attention, elementwise, loss, optimizer). Synchronizing after each op
// serializes the GPU with the host, so a profiled step runs slower than a plain one: use the
// shares, not the sum, and measure throughput without it (`ftune bench` does both).
#pragma once
#include <array>
#include <chrono>
#include <string>

#include "backend/ops.h"

namespace ftune {

enum class OpCategory { Gemm, Attention, Elementwise, Loss, Optimizer, kCount };
const char* op_category_name(OpCategory c);

class ProfilingOps final : public Ops {
 public:
  explicit ProfilingOps(Ops& inner) : inner_(inner) {}

  struct Totals {
    std::array<double, static_cast<size_t>(OpCategory::kCount)> seconds{};
    std::array<int64_t, static_cast<size_t>(OpCategory::kCount)> calls{};
  };
  const Totals& totals() const { return totals_; }
  void reset() { totals_ = Totals{}; }

  Device device() const override { return inner_.device(); }
  const char* name() const override { return inner_.name(); }
  void synchronize() override { inner_.synchronize(); }

  void gemm(const Tensor& a, bool ta, const Tensor& b, bool tb, Tensor& c, float alpha,
            float beta) override {
    timed(OpCategory::Gemm, [&] { inner_.gemm(a, ta, b, tb, c, alpha, beta); });
  }
  void add_bias(Tensor& y, const Tensor& bias) override {
    timed(OpCategory::Elementwise, [&] { inner_.add_bias(y, bias); });
  }
  void bias_backward(const Tensor& dy, Tensor& dbias) override {
    timed(OpCategory::Elementwise, [&] { inner_.bias_backward(dy, dbias); });
  }
  void axpy(float alpha, const Tensor& x, Tensor& y) override {
    timed(OpCategory::Elementwise, [&] { inner_.axpy(alpha, x, y); });
  }
  void scale(Tensor& x, float alpha) override {
    timed(OpCategory::Optimizer, [&] { inner_.scale(x, alpha); });
  }
  void cast(const Tensor& src, Tensor& dst) override {
    timed(OpCategory::Elementwise, [&] { inner_.cast(src, dst); });
  }
  void dequantize_nf4(const Nf4Weight& w, Tensor& out) override {  // part of the GEMM path
    timed(OpCategory::Gemm, [&] { inner_.dequantize_nf4(w, out); });
  }
  // FP8's quantization and weight transposes count as elementwise work, so that `gemm` shows
  // what the FP8 GEMMs themselves save.
  void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale) override {
    timed(OpCategory::Elementwise, [&] { inner_.quantize_fp8(x, q, scale); });
  }
  void gemm_fp8(const Tensor& a, const Tensor& sa, const Tensor& b, const Tensor& sb, Tensor& c,
                float alpha, float beta) override {
    timed(OpCategory::Gemm, [&] { inner_.gemm_fp8(a, sa, b, sb, c, alpha, beta); });
  }
  void transpose(const Tensor& src, Tensor& dst) override {
    timed(OpCategory::Elementwise, [&] { inner_.transpose(src, dst); });
  }
  double sum_squares(const Tensor& x) override {
    double r = 0;
    timed(OpCategory::Optimizer, [&] { r = inner_.sum_squares(x); });
    return r;
  }
  void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) override {
    timed(OpCategory::Elementwise, [&] { inner_.embedding_forward(table, ids, out); });
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    timed(OpCategory::Elementwise, [&] { inner_.embedding_backward(dy, ids, dtable); });
  }
  void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd) override {
    timed(OpCategory::Elementwise, [&] { inner_.rms_norm_forward(x, w, eps, y, rstd); });
  }
  void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                         Tensor& dx, Tensor* dw, bool accumulate) override {
    timed(OpCategory::Elementwise,
          [&] { inner_.rms_norm_backward(dy, x, w, rstd, dx, dw, accumulate); });
  }
  void rope_forward(Tensor& x, const Tensor& pos, const Tensor& cos, const Tensor& sin) override {
    timed(OpCategory::Elementwise, [&] { inner_.rope_forward(x, pos, cos, sin); });
  }
  void rope_backward(Tensor& dx, const Tensor& pos, const Tensor& cos,
                     const Tensor& sin) override {
    timed(OpCategory::Elementwise, [&] { inner_.rope_backward(dx, pos, cos, sin); });
  }
  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& ds,
                         float scale, Tensor& o, Tensor& lse) override {
    timed(OpCategory::Attention, [&] { inner_.attention_forward(q, k, v, ds, scale, o, lse); });
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const Tensor& d_o, const Tensor& ds, float scale,
                          Tensor& dq, Tensor& dk, Tensor& dv) override {
    timed(OpCategory::Attention,
          [&] { inner_.attention_backward(q, k, v, o, lse, d_o, ds, scale, dq, dk, dv); });
  }
  void attention_kv_cache(const Tensor& q, const Tensor& kc, const Tensor& vc, int64_t past,
                          float scale, Tensor& o) override {
    timed(OpCategory::Attention, [&] { inner_.attention_kv_cache(q, kc, vc, past, scale, o); });
  }
  void swiglu_forward(const Tensor& g, const Tensor& u, Tensor& out) override {
    timed(OpCategory::Elementwise, [&] { inner_.swiglu_forward(g, u, out); });
  }
  void swiglu_backward(const Tensor& dout, const Tensor& g, const Tensor& u, Tensor& dg,
                       Tensor& du) override {
    timed(OpCategory::Elementwise, [&] { inner_.swiglu_backward(dout, g, u, dg, du); });
  }
  void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out,
                       Tensor& mask) override {
    timed(OpCategory::Elementwise, [&] { inner_.dropout_forward(x, p, seed, out, mask); });
  }
  void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset,
                     Tensor& out) override {
    timed(OpCategory::Elementwise, [&] { inner_.dropout_apply(x, p, seed, index_offset, out); });
  }
  void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) override {
    timed(OpCategory::Elementwise, [&] { inner_.dropout_backward(dy, mask, p, dx); });
  }
  void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& t, float gs,
                             Tensor& loss_sum, Tensor* dx, Tensor* logits,
                             int64_t chunk) override {
    timed(OpCategory::Loss,
          [&] { inner_.lm_head_cross_entropy(x, w, t, gs, loss_sum, dx, logits, chunk); });
  }
  void set_check_index_values(bool on) override { inner_.set_check_index_values(on); }
  void describe_documents(const Tensor& doc_start, const std::vector<int32_t>& host) override {
    inner_.describe_documents(doc_start, host);
  }
  std::unique_ptr<ActivationStash> make_activation_stash() override {
    return inner_.make_activation_stash();
  }
  void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                            Tensor& sum, Tensor& y, Tensor& rstd) override {
    timed(OpCategory::Elementwise,
          [&] { inner_.add_rms_norm_forward(a, b, w, eps, sum, y, rstd); });
  }
  void qkv_rope_split_forward(const Tensor& qkv, const Tensor& pos, const Tensor& cos,
                              const Tensor& sin, Tensor& q, Tensor& k, Tensor& v) override {
    timed(OpCategory::Elementwise,
          [&] { inner_.qkv_rope_split_forward(qkv, pos, cos, sin, q, k, v); });
  }
  void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& pos, const Tensor& cos, const Tensor& sin,
                               Tensor& dqkv) override {
    timed(OpCategory::Elementwise,
          [&] { inner_.qkv_rope_merge_backward(dq, dk, dv, pos, cos, sin, dqkv); });
  }
  void swiglu_fused_forward(const Tensor& gu, Tensor& out) override {
    timed(OpCategory::Elementwise, [&] { inner_.swiglu_fused_forward(gu, out); });
  }
  void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) override {
    timed(OpCategory::Elementwise, [&] { inner_.swiglu_fused_backward(dout, gu, dgu); });
  }
  void adamw_step(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, float lr, float b1, float b2,
                  float eps, float wd, int64_t step) override {
    timed(OpCategory::Optimizer, [&] { inner_.adamw_step(p, g, m, v, lr, b1, b2, eps, wd, step); });
  }

 private:
  template <typename F>
  void timed(OpCategory c, F&& f) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    inner_.synchronize();
    const std::chrono::duration<double> d = std::chrono::steady_clock::now() - t0;
    totals_.seconds[static_cast<size_t>(c)] += d.count();
    totals_.calls[static_cast<size_t>(c)] += 1;
  }

  Ops& inner_;
  Totals totals_;
};

}  // namespace ftune
