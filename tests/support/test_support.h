// Shared helpers for the C++ tests: tolerant comparisons, random tensors, finite differences.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace ftune::test {

std::string data_path(const std::string& rel);  // under tests/
std::string temp_dir(const std::string& tag);   // a fresh empty directory

// Uniform(-scale, scale) values from a fixed seed.
Tensor random_tensor(const Shape& shape, uint64_t seed, float scale = 1.0f);

// max_i |a-b| / (atol + rtol*|b|) <= 1 ; returns a message describing the worst element or "".
std::string compare(const std::vector<float>& got, const std::vector<float>& want, float rtol,
                    float atol);
// Relative error ||got - want|| / ||want|| (L2).
double rel_l2(const std::vector<float>& got, const std::vector<float>& want);

// Central finite differences of a scalar function f with respect to every element of x
// (modified in place and restored). Computed in double where f returns double.
std::vector<float> finite_diff(Tensor& x, const std::function<double()>& f, double eps = 1e-3);

// L = sum(out * r) in double: the scalar whose gradient with respect to out is r.
double weighted_sum(const Tensor& out, const Tensor& r);

// The message of the ftune::Error that f throws, or a note that it threw none.
template <typename F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no ftune::Error thrown)";
}

}  // namespace ftune::test
