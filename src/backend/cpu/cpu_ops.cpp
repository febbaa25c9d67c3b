// The CPU reference backend: CpuOps implements ftune::Ops by forwarding to the kernels of
// this folder (cpu_kernels.h lists them, one file per op family). fp32 throughout; it is the
// oracle the CUDA backend is tested against (DESIGN.md, "src/backend/cpu/").
#include <memory>

#include "backend/cpu/cpu_kernels.h"
#include "backend/op_checks.h"
#include "backend/ops.h"

namespace ftune {

namespace {

class CpuOps final : public Ops {
 public:
  Device device() const override { return Device::cpu(); }
  const char* name() const override { return "cpu"; }

  void gemm(const Tensor& a, bool trans_a, const Tensor& b, bool trans_b, Tensor& c, float alpha,
            float beta) override {
    cpu::gemm(a, trans_a, b, trans_b, c, alpha, beta);
  }
  void add_bias(Tensor& y, const Tensor& bias) override { cpu::add_bias(y, bias); }
  void bias_backward(const Tensor& dy, Tensor& dbias) override { cpu::bias_backward(dy, dbias); }
  void axpy(float alpha, const Tensor& x, Tensor& y) override { cpu::axpy(alpha, x, y); }
  void scale(Tensor& x, float alpha) override { cpu::scale(x, alpha); }
  double sum_squares(const Tensor& x) override { return cpu::sum_squares(x); }
  void cast(const Tensor& src, Tensor& dst) override { cpu::cast(src, dst); }
  void dequantize_nf4(const Nf4Weight& w, Tensor& out) override {
    check_dequantize_nf4(w, out, Device::cpu());
    dequantize_nf4_cpu(w, out);
  }
  void quantize_fp8(const Tensor& x, Tensor& q, Tensor& scale) override {
    cpu::quantize_fp8(x, q, scale);
  }
  void gemm_fp8(const Tensor& a, const Tensor& a_scale, const Tensor& b, const Tensor& b_scale,
                Tensor& c, float alpha, float beta) override {
    cpu::gemm_fp8(a, a_scale, b, b_scale, c, alpha, beta);
  }
  void transpose(const Tensor& src, Tensor& dst) override { cpu::transpose(src, dst); }

  void embedding_forward(const Tensor& table, const Tensor& ids, Tensor& out) override {
    cpu::embedding_forward(table, ids, out);
  }
  void embedding_backward(const Tensor& dy, const Tensor& ids, Tensor& dtable) override {
    cpu::embedding_backward(dy, ids, dtable);
  }

  void rms_norm_forward(const Tensor& x, const Tensor& w, float eps, Tensor& y,
                        Tensor& rstd) override {
    cpu::rms_norm_forward(x, w, eps, y, rstd);
  }
  void rms_norm_backward(const Tensor& dy, const Tensor& x, const Tensor& w, const Tensor& rstd,
                         Tensor& dx, Tensor* dw, bool accumulate) override {
    cpu::rms_norm_backward(dy, x, w, rstd, dx, dw, accumulate);
  }
  void add_rms_norm_forward(const Tensor& a, const Tensor& b, const Tensor& w, float eps,
                            Tensor& sum, Tensor& y, Tensor& rstd) override {
    cpu::add_rms_norm_forward(a, b, w, eps, sum, y, rstd);
  }

  void rope_forward(Tensor& x, const Tensor& positions, const Tensor& cos,
                    const Tensor& sin) override {
    cpu::rope_forward(x, positions, cos, sin);
  }
  void rope_backward(Tensor& dx, const Tensor& positions, const Tensor& cos,
                     const Tensor& sin) override {
    cpu::rope_backward(dx, positions, cos, sin);
  }
  void qkv_rope_split_forward(const Tensor& qkv, const Tensor& positions, const Tensor& cos,
                              const Tensor& sin, Tensor& q, Tensor& k, Tensor& v) override {
    cpu::qkv_rope_split_forward(qkv, positions, cos, sin, q, k, v);
  }
  void qkv_rope_merge_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& positions, const Tensor& cos, const Tensor& sin,
                               Tensor& dqkv) override {
    cpu::qkv_rope_merge_backward(dq, dk, dv, positions, cos, sin, dqkv);
  }

  void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v,
                         const Tensor& doc_start, float scale, Tensor& o, Tensor& lse) override {
    cpu::attention_forward(q, k, v, doc_start, scale, o, lse);
  }
  void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& o,
                          const Tensor& lse, const Tensor& d_o, const Tensor& doc_start,
                          float scale, Tensor& dq, Tensor& dk, Tensor& dv) override {
    cpu::attention_backward(q, k, v, o, lse, d_o, doc_start, scale, dq, dk, dv);
  }
  void attention_kv_cache(const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                          int64_t past, float scale, Tensor& o) override {
    cpu::attention_kv_cache(q, k_cache, v_cache, past, scale, o);
  }

  void swiglu_forward(const Tensor& gate, const Tensor& up, Tensor& out) override {
    cpu::swiglu_forward(gate, up, out);
  }
  void swiglu_backward(const Tensor& dout, const Tensor& gate, const Tensor& up, Tensor& dgate,
                       Tensor& dup) override {
    cpu::swiglu_backward(dout, gate, up, dgate, dup);
  }
  void swiglu_fused_forward(const Tensor& gu, Tensor& out) override {
    cpu::swiglu_fused_forward(gu, out);
  }
  void swiglu_fused_backward(const Tensor& dout, const Tensor& gu, Tensor& dgu) override {
    cpu::swiglu_fused_backward(dout, gu, dgu);
  }

  void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& out,
                       Tensor& mask) override {
    cpu::dropout_forward(x, p, seed, out, mask);
  }
  void dropout_apply(const Tensor& x, float p, uint64_t seed, int64_t index_offset,
                     Tensor& out) override {
    cpu::dropout_apply(x, p, seed, index_offset, out);
  }
  void dropout_backward(const Tensor& dy, const Tensor& mask, float p, Tensor& dx) override {
    cpu::dropout_backward(dy, mask, p, dx);
  }

  void lm_head_cross_entropy(const Tensor& x, const Tensor& w, const Tensor& targets,
                             float grad_scale, Tensor& loss_sum, Tensor* dx, Tensor* logits,
                             int64_t chunk_tokens) override {
    cpu::lm_head_cross_entropy(x, w, targets, grad_scale, loss_sum, dx, logits, chunk_tokens);
  }

  void adamw_step(Tensor& param, const Tensor& grad, Tensor& m, Tensor& v, float lr, float beta1,
                  float beta2, float eps, float weight_decay, int64_t step) override {
    cpu::adamw_step(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step);
  }
};

}  // namespace

std::unique_ptr<Ops> make_cpu_ops() { return std::make_unique<CpuOps>(); }

}  // namespace ftune
