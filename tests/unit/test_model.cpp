// Model-level tests: the architecture table, RoPE frequencies, LoRA-linear and whole-model
// gradients against finite differences, gradient checkpointing, packing isolation, and loading
// errors.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "backend/ops.h"
#include "io/safetensors.h"
#include "model/adapter_io.h"
#include "model/llama_model.h"
#include "model/memory_model.h"
#include "model/rope.h"
#include "support/test_support.h"

using namespace ftune;

namespace {

ModelSpec small_spec(const std::string& arch = "llama") {
  ModelSpec s;
  s.arch = arch;
  s.vocab_size = 37;
  s.hidden_size = 16;
  s.intermediate_size = 24;
  s.num_layers = 2;
  s.num_heads = 4;
  s.num_kv_heads = 2;
  s.head_dim = 4;
  s.max_position_embeddings = 64;
  if (arch == "qwen2") s.proj_bias[0] = s.proj_bias[1] = s.proj_bias[2] = true;
  return s;
}

// Random non-zero LoRA weights so every gradient path is exercised.
LoraWeights random_lora(const ModelSpec& spec, LoraSpec ls, uint64_t seed) {
  LoraWeights w = LoraWeights::init(spec, ls, Device::cpu());
  uint64_t k = seed;
  for (auto& p : w.params()) p.value->copy_from(test::random_tensor(p.value->shape(), ++k, 0.3f));
  return w;
}

Batch packed_batch() {
  // Row 0: two documents (5 + 3 tokens); row 1: one document of 6 and 2 padding tokens.
  Batch b = batch_from_documents({{1, 5, 9, 2, 7, 3, 3, 8}, {4, 4, 6, 1, 0, 2}},
                                 {{-100, 5, 9, 2, 7, -100, 3, 8}, {4, 4, -100, 1, 0, 2}}, 8, 0);
  for (int i = 5; i < 8; ++i) {
    b.doc_start[static_cast<size_t>(i)] = 5;
    b.position_ids[static_cast<size_t>(i)] = i - 5;
  }
  return b;
}

}  // namespace

TEST(Architecture, TableCoversEveryArchitecture) {
  for (const auto& a : kArchitectures) {
    EXPECT_EQ(find_architecture(a.model_type, ""), &a);
    EXPECT_EQ(find_architecture("", a.hf_class), &a);
    ModelSpec s = small_spec(a.model_type);
    EXPECT_NO_THROW(s.validate()) << a.model_type;
    // Every architecture builds, runs and trains through the same code path.
    auto ops = make_cpu_ops();
    LlamaModel m(s, random_base_weights(s, 3, 0.2f), *ops);
    LoraSpec ls;
    ls.r = 2;
    m.attach_lora(random_lora(s, ls, 5));
    const StepLoss l = m.forward_backward(packed_batch(), 0.1f);
    EXPECT_TRUE(std::isfinite(l.loss_sum)) << a.model_type;
    EXPECT_GT(l.count, 0);
  }
  EXPECT_EQ(find_architecture("gpt2", "GPT2LMHeadModel"), nullptr);
  EXPECT_EQ(supported_architectures(), "llama, mistral, qwen2");
  for (Proj p : kAllProj) {
    Proj q;
    ASSERT_TRUE(proj_from_name(proj_name(p), &q));
    EXPECT_EQ(p, q);
  }
  EXPECT_EQ(tensor_names::lora_a(3, Proj::Gate),
            "base_model.model.model.layers.3.mlp.gate_proj.lora_A.weight");
  EXPECT_EQ(tensor_names::proj_bias(0, Proj::K), "model.layers.0.self_attn.k_proj.bias");
}

TEST(Rope, Llama3ScalingMatchesFormula) {
  RopeSpec r;
  r.type = "llama3";
  r.theta = 500000.0;
  r.factor = 8;
  r.low_freq_factor = 1;
  r.high_freq_factor = 4;
  r.original_max_position_embeddings = 8192;
  const auto inv = rope_inv_freq(r, 128);
  ASSERT_EQ(inv.size(), 64u);
  for (size_t i = 0; i < inv.size(); ++i) {
    const double base = 1.0 / std::pow(500000.0, 2.0 * static_cast<double>(i) / 128.0);
    const double wl = 2 * M_PI / base;
    double want;
    if (wl < 8192.0 / 4) want = base;
    else if (wl > 8192.0) want = base / 8;
    else {
      const double s = (8192.0 / wl - 1) / 3;
      want = (1 - s) * base / 8 + s * base;
    }
    EXPECT_NEAR(inv[i] / want, 1.0, 1e-5) << i;
  }
  RopeSpec lin;
  lin.type = "linear";
  lin.factor = 4;
  EXPECT_NEAR(rope_inv_freq(lin, 8)[1], 1.0 / std::pow(10000.0, 0.25) / 4, 1e-7);
}

TEST(LoraLinear, GradientsMatchFiniteDifferences) {
  auto ops = make_cpu_ops();
  for (float dropout : {0.0f, 0.3f}) {
    const int64_t N = 5, in = 6, out = 4, r = 3;
    Tensor x = test::random_tensor({N, in}, 1);
    Tensor w = test::random_tensor({out, in}, 2);
    Tensor b = test::random_tensor({out}, 3);
    LoraPair lp{test::random_tensor({r, in}, 4), test::random_tensor({out, r}, 5),
                Tensor::zeros({r, in}), Tensor::zeros({out, r})};
    Tensor R = test::random_tensor({N, out}, 6);
    const float scaling = 1.7f;
    auto loss = [&]() {
      Tensor y = Tensor::empty({N, out});
      lora_linear_forward(*ops, x, w, b, &lp, scaling, dropout, 99, y, nullptr);
      double s = 0;
      for (int64_t i = 0; i < y.numel(); ++i) s += static_cast<double>(y.f32()[i]) * R.f32()[i];
      return s;
    };
    Tensor y = Tensor::empty({N, out});
    LoraLinearCache cache;
    lora_linear_forward(*ops, x, w, b, &lp, scaling, dropout, 99, y, &cache);
    Tensor dx = Tensor::empty({N, in});
    lora_linear_backward(*ops, R, x, w, &lp, scaling, dropout, cache, dx, false);
    EXPECT_EQ(test::compare(dx.to_vector(), test::finite_diff(x, loss), 1e-2f, 1e-3f), "")
        << "dx, dropout " << dropout;
    EXPECT_EQ(test::compare(lp.dA.to_vector(), test::finite_diff(lp.A, loss), 1e-2f, 1e-3f), "")
        << "dA, dropout " << dropout;
    EXPECT_EQ(test::compare(lp.dB.to_vector(), test::finite_diff(lp.B, loss), 1e-2f, 1e-3f), "")
        << "dB, dropout " << dropout;
  }
}

TEST(LoraLinear, ScalingAndPeftInit) {
  LoraSpec s;
  s.r = 16;
  s.alpha = 32;
  EXPECT_FLOAT_EQ(s.scaling(), 2.0f);
  s.use_rslora = true;
  EXPECT_FLOAT_EQ(s.scaling(), 8.0f);
  ModelSpec m = small_spec();
  s.r = 4;
  s.targets = {true, false, true, false, false, false, true};
  LoraWeights w = LoraWeights::init(m, s, Device::cpu());
  EXPECT_EQ(w.params().size(), 2u * 3u * 2u);  // 3 projections x 2 layers x (A, B)
  const float bound = 1.0f / std::sqrt(16.0f);
  double sum_abs = 0;
  for (auto& p : w.params()) {
    const auto v = p.value->to_vector();
    const bool is_b = p.name.find("lora_B") != std::string::npos;
    for (float f : v) {
      if (is_b) EXPECT_EQ(f, 0.0f);
      else {
        EXPECT_LE(std::fabs(f), bound);
        sum_abs += std::fabs(f);
      }
    }
  }
  EXPECT_GT(sum_abs, 0.0);
  LoraWeights again = LoraWeights::init(m, s, Device::cpu());
  EXPECT_EQ(again.params()[0].value->to_vector(), w.params()[0].value->to_vector());
}

TEST(Model, WholeModelLoraGradientsMatchFiniteDifferences) {
  for (const char* arch : {"llama", "qwen2"}) {
    ModelSpec s = small_spec(arch);
    s.tie_word_embeddings = std::string(arch) == "llama";
    auto ops = make_cpu_ops();
    LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops);
    LoraSpec ls;
    ls.r = 2;
    ls.alpha = 4;
    m.attach_lora(random_lora(s, ls, 21));
    const Batch b = packed_batch();
    m.lora().zero_grad();
    m.forward_backward(b, 1.0f);
    auto loss = [&]() { return m.forward(b).loss_sum; };
    int checked = 0;
    for (auto& p : m.lora().params()) {
      if (checked++ % 5 != 0) continue;  // a spread of parameters keeps the test fast
      const auto fd = test::finite_diff(*p.value, loss, 1e-2);
      EXPECT_EQ(test::compare(p.grad->to_vector(), fd, 2e-2f, 2e-3f), "") << arch << " " << p.name;
    }
  }
}

TEST(Model, CheckpointingGivesIdenticalGradients) {
  ModelSpec s = small_spec();
  auto ops = make_cpu_ops();
  LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops);
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;  // dropout masks must repeat on recomputation
  m.attach_lora(random_lora(s, ls, 21));
  const Batch b = packed_batch();
  std::vector<std::vector<float>> g1, g2;
  m.lora().zero_grad();
  Batch keyed = b;
  keyed.step = 3;
  keyed.global_index = 5;
  const double l1 = m.forward_backward(keyed, 0.5f).loss_sum;
  for (auto& p : m.lora().params()) g1.push_back(p.grad->to_vector());
  // Same dropout key (step, global micro-batch index) => same masks, whatever forward passes
  // (evaluation) ran before.
  LlamaModel m2(s, random_base_weights(s, 11, 0.3f), *ops, {true, 1024});
  m2.attach_lora(random_lora(s, ls, 21));
  for (int i = 0; i < 3; ++i) m2.forward(b);
  m2.lora().zero_grad();
  const double l2 = m2.forward_backward(keyed, 0.5f).loss_sum;
  for (auto& p : m2.lora().params()) g2.push_back(p.grad->to_vector());
  // Another key gives other masks, hence another loss.
  Batch other = keyed;
  other.global_index = 6;
  m2.lora().zero_grad();
  EXPECT_NE(m2.forward_backward(other, 0.5f).loss_sum, l2);
  EXPECT_DOUBLE_EQ(l1, l2);
  ASSERT_EQ(g1.size(), g2.size());
  for (size_t i = 0; i < g1.size(); ++i) EXPECT_EQ(g1[i], g2[i]) << i;
}

TEST(Model, OffloadedCheckpointsGiveIdenticalGradients) {
  // The saved layer inputs make a round trip through the activation stash (a host copy here;
  // pinned memory and a copy stream on CUDA, tested in tests/cuda): nothing else changes.
  ModelSpec s = small_spec();
  auto ops = make_cpu_ops();
  LoraSpec ls;
  ls.r = 2;
  ls.dropout = 0.1;
  Batch keyed = packed_batch();
  keyed.step = 2;
  keyed.global_index = 1;
  std::vector<std::vector<float>> g[2];
  double loss[2][2];
  for (int offload = 0; offload < 2; ++offload) {
    ModelOptions o;
    o.gradient_checkpointing = true;
    o.offload_checkpoints = offload == 1;
    LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops, o);
    m.attach_lora(random_lora(s, ls, 21));
    m.lora().zero_grad();
    for (int pass = 0; pass < 2; ++pass)  // the stash's slots are reused by the second step
      loss[offload][pass] = m.forward_backward(keyed, 0.5f).loss_sum;
    for (auto& p : m.lora().params()) g[offload].push_back(p.grad->to_vector());
  }
  EXPECT_DOUBLE_EQ(loss[1][0], loss[0][0]);
  EXPECT_DOUBLE_EQ(loss[1][1], loss[0][1]);
  ASSERT_EQ(g[0].size(), g[1].size());
  for (size_t i = 0; i < g[0].size(); ++i) EXPECT_EQ(g[1][i], g[0][i]) << i;
}

TEST(Model, MlpInTokenChunksMatchesTheWholeMlp) {
  // With checkpointing (and in inference), a micro-batch of more than mlp_chunk_tokens tokens
  // runs each layer's MLP in row chunks (its forward, recompute and backward): the same loss,
  // logits and LoRA gradients as the whole MLP at once, up to summation order. Chunks of 5 over
  // the 16-token batch: three full chunks and a partial one. With LoRA dropout each chunk draws
  // its masks at its rows of the whole input: the same masks, so the same result too (a chunk
  // offset left out would give other masks and fail this).
  ModelSpec s = small_spec();
  auto ops = make_cpu_ops();
  Batch keyed = packed_batch();
  keyed.step = 4;
  keyed.global_index = 2;
  for (double dropout : {0.0, 0.1}) {
    SCOPED_TRACE(dropout);
    LoraSpec ls;
    ls.r = 2;
    ls.dropout = dropout;
    std::vector<std::vector<float>> g[2];
    double loss[2], eval_loss[2];
    std::vector<float> logits[2];
    for (int chunked = 0; chunked < 2; ++chunked) {
      ModelOptions o;
      o.gradient_checkpointing = true;
      o.mlp_chunk_tokens = chunked ? 5 : 1 << 20;
      LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops, o);
      m.attach_lora(random_lora(s, ls, 21));
      m.lora().zero_grad();
      loss[chunked] = m.forward_backward(keyed, 0.5f).loss_sum;
      for (auto& p : m.lora().params()) g[chunked].push_back(p.grad->to_vector());
      Tensor l = Tensor::zeros({keyed.tokens(), s.vocab_size});
      eval_loss[chunked] = m.forward(keyed, &l).loss_sum;
      logits[chunked] = l.to_vector();
    }
    ASSERT_EQ(g[0].size(), g[1].size());
    EXPECT_NEAR(loss[1], loss[0], 1e-6 * std::abs(loss[0]));
    EXPECT_NEAR(eval_loss[1], eval_loss[0], 1e-6 * std::abs(eval_loss[0]));
    for (size_t i = 0; i < logits[0].size(); ++i)
      ASSERT_NEAR(logits[1][i], logits[0][i], 1e-5f + 1e-5f * std::abs(logits[0][i])) << i;
    double max_grad = 0;
    for (const auto& v : g[0])
      for (float x : v) max_grad = std::max(max_grad, static_cast<double>(std::abs(x)));
    ASSERT_GT(max_grad, 0.0);
    for (size_t i = 0; i < g[0].size(); ++i)
      for (size_t j = 0; j < g[0][i].size(); ++j)
        ASSERT_NEAR(g[1][i][j], g[0][i][j], 1e-5 * max_grad) << "param " << i << " element " << j;
  }
}

TEST(Model, MlpInTokenChunksLowersThePeakAsTheMemoryModelSays) {
  // An MLP-heavy layer (F = 32 H) over 64 tokens with checkpointing: chunks of 8 rows cut the
  // measured tensor peak, and the memory model predicts both peaks (CPU allocation accounting).
  ModelSpec s = small_spec();
  s.intermediate_size = 512;
  s.max_position_embeddings = 64;
  auto ops = make_cpu_ops();
  std::vector<int32_t> ids(64), labels(64);
  for (int i = 0; i < 64; ++i) ids[static_cast<size_t>(i)] = labels[static_cast<size_t>(i)] = (i * 7) % 37;
  const Batch b = batch_from_documents({ids}, {labels}, 64, 0);
  LoraSpec ls;
  ls.r = 2;
  double peak[2], predicted[2];
  for (int chunked = 0; chunked < 2; ++chunked) {
    ModelOptions o;
    o.gradient_checkpointing = true;
    o.mlp_chunk_tokens = chunked ? 8 : 1 << 20;
    reset_peak_memory(DeviceType::CPU);
    const int64_t before = memory_stats(DeviceType::CPU).live_bytes;
    {
      LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops, o);
      m.attach_lora(random_lora(s, ls, 21));
      m.forward_backward(b, 1.0f);
    }
    peak[chunked] = static_cast<double>(memory_stats(DeviceType::CPU).peak_bytes - before);
    MemoryModelInput in;
    in.spec = s;
    in.lora = ls;
    in.micro_batch = 1;
    in.seq_len = 64;
    in.checkpointing = true;
    in.mlp_chunk_tokens = o.mlp_chunk_tokens;
    const MemoryEstimate e = estimate_memory(in);
    predicted[chunked] = static_cast<double>(e.tensor_peak() - e.optimizer_state);  // no AdamW here
  }
  EXPECT_LT(peak[1], 0.8 * peak[0]);
  for (int c = 0; c < 2; ++c)
    EXPECT_NEAR(predicted[c], peak[c], 0.05 * peak[c]) << "chunked " << c;
}

TEST(ActivationStash, HostCopyRoundTripsAndRefusesMisuse) {
  auto stash = make_host_copy_stash();
  Tensor a = Tensor::from_vector({1.0f, 2.0f, 3.0f}, {3});
  stash->put(2, a);
  a.f32()[0] = 99.0f;  // the stash holds its own copy
  EXPECT_EQ(stash->host_bytes(), 12);
  EXPECT_NE(test::error_of([&] { stash->put(2, a); }).find("slot 2 is already in use"),
            std::string::npos);
  stash->prefetch(2);
  stash->prefetch(7);  // empty: nothing to do
  EXPECT_EQ(stash->take(2).to_vector(), (std::vector<float>{1.0f, 2.0f, 3.0f}));
  EXPECT_NE(test::error_of([&] { stash->take(2); }).find("slot 2 is empty"), std::string::npos);
  stash->put(0, a);
  stash->clear();
  EXPECT_EQ(stash->host_bytes(), 0);
  stash->put(0, a);  // usable again after clear()
  EXPECT_EQ(stash->take(0).to_vector()[0], 99.0f);
}

TEST(Model, PackedDocumentsDoNotSeeEachOther) {
  ModelSpec s = small_spec();
  auto ops = make_cpu_ops();
  LlamaModel m(s, random_base_weights(s, 11, 0.3f), *ops);
  Batch b = packed_batch();
  Tensor l1 = Tensor::zeros({b.tokens(), s.vocab_size});
  m.forward(b, &l1);
  b.input_ids[1] = 30;  // change document 1 of row 0
  Tensor l2 = Tensor::zeros({b.tokens(), s.vocab_size});
  m.forward(b, &l2);
  const auto a = l1.to_vector(), c = l2.to_vector();
  const int64_t V = s.vocab_size;
  for (int64_t i = 5; i < 16; ++i)  // document 2 of row 0 and all of row 1
    for (int64_t v = 0; v < V; ++v) EXPECT_EQ(a[i * V + v], c[i * V + v]) << i;
  bool changed = false;
  for (int64_t v = 0; v < V; ++v) changed |= a[1 * V + v] != c[1 * V + v];
  EXPECT_TRUE(changed);
  // A document placed alone in a row gives the same logits as packed.
  Batch alone = batch_from_documents({{3, 3, 8}}, {{3, 3, 8}}, 3, 0);
  Tensor l3 = Tensor::zeros({3, V});
  m.forward(alone, &l3);
  const auto d = l3.to_vector();
  for (int64_t i = 0; i < 3; ++i)
    for (int64_t v = 0; v < V; ++v) EXPECT_NEAR(d[i * V + v], a[(5 + i) * V + v], 1e-5);
}

TEST(Model, LoadErrorsNameTensorAndShapes) {
  const std::string dir = test::temp_dir("model_load");
  ModelSpec s = small_spec();
  BaseWeights w = random_base_weights(s, 1);
  auto named = named_base_weights(s, w);
  nlohmann::json cfg = {{"architectures", {"LlamaForCausalLM"}}, {"model_type", "llama"},
                        {"vocab_size", 37}, {"hidden_size", 16}, {"intermediate_size", 24},
                        {"num_hidden_layers", 2}, {"num_attention_heads", 4},
                        {"num_key_value_heads", 2}, {"head_dim", 4}, {"rms_norm_eps", 1e-5},
                        {"max_position_embeddings", 64}, {"hidden_act", "silu"},
                        {"tie_word_embeddings", false}};
  std::ofstream(dir + "/config.json") << cfg.dump();
  auto ops = make_cpu_ops();
  // Missing weights file.
  try {
    LlamaModel::from_hf_folder(dir, *ops);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
  // Misshapen tensor.
  auto bad = named;
  for (auto& [n, t] : bad)
    if (n == "model.layers.1.mlp.up_proj.weight") t = Tensor::zeros({24, 15});
  write_safetensors(dir + "/model.safetensors", bad);
  try {
    LlamaModel::from_hf_folder(dir, *ops);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("model.layers.1.mlp.up_proj.weight"), std::string::npos) << m;
    EXPECT_NE(m.find("[24, 15]"), std::string::npos) << m;
    EXPECT_NE(m.find("expected [24, 16]"), std::string::npos) << m;
  }
  // Missing tensor.
  std::vector<std::pair<std::string, Tensor>> missing;
  for (auto& [n, t] : named)
    if (n != "model.norm.weight") missing.emplace_back(n, t);
  write_safetensors(dir + "/model.safetensors", missing);
  try {
    LlamaModel::from_hf_folder(dir, *ops);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'model.norm.weight' is missing"), std::string::npos)
        << e.what();
  }
  // Unknown architecture.
  cfg["model_type"] = "gpt2";
  cfg["architectures"] = {"GPT2LMHeadModel"};
  std::ofstream(dir + "/config.json") << cfg.dump();
  try {
    LlamaModel::from_hf_folder(dir, *ops);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    const std::string m = e.what();
    EXPECT_NE(m.find("unknown architecture 'GPT2LMHeadModel'"), std::string::npos) << m;
    EXPECT_NE(m.find("config.json"), std::string::npos) << m;
  }
}

TEST(AdapterIO, RoundTripAndErrors) {
  const std::string dir = test::temp_dir("adapter");
  ModelSpec s = small_spec();
  LoraSpec ls;
  ls.r = 3;
  ls.alpha = 6;
  ls.targets = {true, true, false, true, false, false, true};
  LoraWeights w = random_lora(s, ls, 7);
  save_peft_adapter(dir, w, {"my/base"});
  const auto cfg = nlohmann::json::parse(std::ifstream(dir + "/adapter_config.json"));
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["task_type"], "CAUSAL_LM");
  EXPECT_EQ(cfg["r"], 3);
  EXPECT_EQ(cfg["lora_alpha"], 6);
  EXPECT_EQ(cfg["base_model_name_or_path"], "my/base");
  EXPECT_EQ(cfg["target_modules"], nlohmann::json({"q_proj", "k_proj", "o_proj", "down_proj"}));
  SafetensorsFile f = SafetensorsFile::open(dir + "/adapter_model.safetensors");
  EXPECT_EQ(f.names().size(), 2u * 4u * 2u);
  EXPECT_EQ(f.info("base_model.model.model.layers.1.mlp.down_proj.lora_B.weight").shape,
            (Shape{16, 3}));
  EXPECT_EQ(f.metadata().at("format"), "pt");
  LoraWeights back = load_peft_adapter(dir, s, Device::cpu());
  EXPECT_EQ(back.spec.r, 3);
  EXPECT_EQ(back.spec.targets, ls.targets);
  auto pa = w.params(), pb = back.params();
  ASSERT_EQ(pa.size(), pb.size());
  for (size_t i = 0; i < pa.size(); ++i) {
    EXPECT_EQ(pa[i].name, pb[i].name);
    EXPECT_EQ(pa[i].value->to_vector(), pb[i].value->to_vector());
  }
  // An adapter for another model is refused with the tensor named.
  ModelSpec other = s;
  other.hidden_size = 20;
  other.head_dim = 5;
  try {
    load_peft_adapter(dir, other, Device::cpu());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has shape"), std::string::npos) << e.what();
  }
  // DoRA is refused.
  auto c2 = cfg;
  c2["use_dora"] = true;
  std::ofstream(dir + "/adapter_config.json") << c2.dump();
  EXPECT_THROW(load_peft_adapter(dir, s, Device::cpu()), Error);
}
