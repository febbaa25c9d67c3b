#include "support/test_support.h"

#include <fmt/format.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

namespace ftune::test {

std::string data_path(const std::string& rel) { return std::string(FTUNE_TEST_DATA) + "/" + rel; }

std::string temp_dir(const std::string& tag) {
  namespace fs = std::filesystem;
  static int counter = 0;
  fs::path p = fs::temp_directory_path() /
               fmt::format("ftune_test_{}_{}_{}", tag, static_cast<int>(getpid()), counter++);
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

Tensor random_tensor(const Shape& shape, uint64_t seed, float scale) {
  Tensor t = Tensor::empty(shape);
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  float* p = t.f32();
  for (int64_t i = 0; i < t.numel(); ++i) p[i] = u(rng);
  return t;
}

std::string compare(const std::vector<float>& got, const std::vector<float>& want, float rtol,
                    float atol) {
  if (got.size() != want.size())
    return fmt::format("size mismatch: got {} want {}", got.size(), want.size());
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) != std::isnan(want[i]))
      return fmt::format("NaN mismatch at {}: got {} want {}", i, got[i], want[i]);
    if (std::isnan(want[i])) continue;
    const double r = std::fabs(static_cast<double>(got[i]) - want[i]) /
                     (atol + rtol * std::fabs(static_cast<double>(want[i])));
    if (r > worst) {
      worst = r;
      wi = i;
    }
  }
  if (worst <= 1.0) return "";
  return fmt::format("worst element {}: got {} want {} (ratio to tolerance {:.3g})", wi, got[wi],
                     want[wi], worst);
}

double rel_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
    const double d = static_cast<double>(got[i]) - want[i];
    num += d * d;
    den += static_cast<double>(want[i]) * want[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

std::vector<float> finite_diff(Tensor& x, const std::function<double()>& f, double eps) {
  std::vector<float> g(static_cast<size_t>(x.numel()));
  float* p = x.f32();
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float orig = p[i];
    p[i] = static_cast<float>(orig + eps);
    const double fp = f();
    p[i] = static_cast<float>(orig - eps);
    const double fm = f();
    p[i] = orig;
    g[static_cast<size_t>(i)] = static_cast<float>((fp - fm) / (2 * eps));
  }
  return g;
}

double weighted_sum(const Tensor& out, const Tensor& r) {
  double s = 0.0;
  for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(out.f32()[i]) * r.f32()[i];
  return s;
}

}  // namespace ftune::test
