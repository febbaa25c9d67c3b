#include "train/optimizer.h"

#include <cmath>
#include <map>

#include "core/error.h"

namespace ftune {

AdamW::AdamW(Ops& ops, std::vector<LoraWeights::Param> params, AdamWOptions opts,
             Tensor flat_params, Tensor flat_grads)
    : ops_(ops), params_(std::move(params)), opts_(opts) {
  FTUNE_CHECK(opts_.beta1 >= 0 && opts_.beta1 < 1 && opts_.beta2 >= 0 && opts_.beta2 < 1,
              "AdamW: betas must be in [0, 1), got ({}, {})", opts_.beta1, opts_.beta2);
  FTUNE_CHECK(opts_.eps > 0, "AdamW: eps must be positive, got {}", opts_.eps);
  FTUNE_CHECK(opts_.weight_decay >= 0, "AdamW: weight_decay must be >= 0, got {}", opts_.weight_decay);
  if (flat_params.defined() && flat_grads.defined()) {
    FTUNE_CHECK(flat_params.shape() == flat_grads.shape(), "AdamW: flat params {} and grads {}",
                shape_str(flat_params.shape()), shape_str(flat_grads.shape()));
    flat_params_ = flat_params;
    flat_grads_ = flat_grads;
    flat_m_ = Tensor::zeros(flat_params.shape(), DType::F32, flat_params.device());
    flat_v_ = Tensor::zeros(flat_params.shape(), DType::F32, flat_params.device());
    const auto* base = static_cast<const char*>(flat_params.raw());
    for (const auto& p : params_) {
      const auto off = (static_cast<const char*>(p.value->raw()) - base) / 4;
      const auto goff = static_cast<const char*>(p.grad->raw()) -
                        static_cast<const char*>(flat_grads.raw());
      FTUNE_CHECK(off >= 0 && off + p.value->numel() <= flat_params.numel() && goff == off * 4,
                  "AdamW: parameter '{}' is not a view of the flat buffers", p.name);
      m_.push_back(flat_m_.slice_flat(off, p.value->shape()));
      v_.push_back(flat_v_.slice_flat(off, p.value->shape()));
    }
    return;
  }
  for (const auto& p : params_) {
    m_.push_back(Tensor::zeros(p.value->shape(), DType::F32, p.value->device()));
    v_.push_back(Tensor::zeros(p.value->shape(), DType::F32, p.value->device()));
  }
}

void AdamW::step(double lr) {
  ++step_;
  if (flat_params_.defined()) {
    ops_.adamw_step(flat_params_, flat_grads_, flat_m_, flat_v_, static_cast<float>(lr),
                    static_cast<float>(opts_.beta1), static_cast<float>(opts_.beta2),
                    static_cast<float>(opts_.eps), static_cast<float>(opts_.weight_decay), step_);
    return;
  }
  for (size_t i = 0; i < params_.size(); ++i) {
    ops_.adamw_step(*params_[i].value, *params_[i].grad, m_[i], v_[i], static_cast<float>(lr),
                    static_cast<float>(opts_.beta1), static_cast<float>(opts_.beta2),
                    static_cast<float>(opts_.eps), static_cast<float>(opts_.weight_decay), step_);
  }
}

std::vector<std::pair<std::string, Tensor>> AdamW::state() const {
  std::vector<std::pair<std::string, Tensor>> s;
  for (size_t i = 0; i < params_.size(); ++i) {
    s.emplace_back(params_[i].name + ".exp_avg", m_[i]);
    s.emplace_back(params_[i].name + ".exp_avg_sq", v_[i]);
  }
  return s;
}

void AdamW::load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t steps) {
  std::map<std::string, const Tensor*> by_name;
  for (const auto& [n, t] : state) by_name[n] = &t;
  for (size_t i = 0; i < params_.size(); ++i) {
    for (auto [suffix, dst] : {std::pair{".exp_avg", &m_[i]}, std::pair{".exp_avg_sq", &v_[i]}}) {
      const std::string key = params_[i].name + suffix;
      auto it = by_name.find(key);
      FTUNE_CHECK(it != by_name.end(), "optimizer state: '{}' is missing", key);
      FTUNE_CHECK(it->second->shape() == dst->shape(), "optimizer state: '{}' has shape {}, expected {}",
                  key, shape_str(it->second->shape()), shape_str(dst->shape()));
      dst->copy_from(it->second->device() == dst->device() ? *it->second : it->second->to(dst->device()));
    }
  }
  step_ = steps;
}

double global_grad_norm(Ops& ops, const std::vector<LoraWeights::Param>& params,
                        const Tensor& flat_grads) {
  if (flat_grads.defined()) return std::sqrt(ops.sum_squares(flat_grads));
  double ss = 0.0;
  for (const auto& p : params) ss += ops.sum_squares(*p.grad);
  return std::sqrt(ss);
}

double clip_grad_norm(Ops& ops, const std::vector<LoraWeights::Param>& params, double max_norm,
                      const Tensor& flat_grads) {
  const double norm = global_grad_norm(ops, params, flat_grads);
  if (max_norm > 0) {
    const double coef = max_norm / (norm + 1e-6);
    if (coef < 1.0 && flat_grads.defined()) {
      ops.scale(const_cast<Tensor&>(flat_grads), static_cast<float>(coef));
    } else if (coef < 1.0) {
      for (const auto& p : params) ops.scale(*p.grad, static_cast<float>(coef));
    }
  }
  return norm;
}

}  // namespace ftune
