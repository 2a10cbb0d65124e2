// Autograd of the swishkernels ops, in C++ so that a training step pays no Python per activation.
//
// The nodes are written the way PyTorch generates its own (SiluBackward0): a torch::autograd::Node
// with one SavedVariable, created only when a gradient is needed. torch::autograd::Function would do
// the same job at several times the cost per call (it allocates a node and a context on every call,
// grad or no grad, and wraps outputs generically), which at 64 elements made the op cost 1.15x
// F.silu forward+backward and 1.29x in a no-grad forward (benchmarks/per_call_cost.py).
//
// X_forward saves only x (SavedVariable: version-checked at backward, saved-tensor hooks honoured);
// its backward calls X_backward through the dispatcher, so the graph is recorded when create_graph
// is set. X_backward's own node (second derivatives, rare) is written with ATen ops: differentiable
// again, no kernel of ours needed.
// Forward-mode AD has no rule here: a tangent on an input raises instead of being dropped (the Python
// layer takes swishkernels/autograd.py's Functions, which have jvp rules, under forward AD).
// X_forward_inplace has no derivative (the Python layer calls it only where no gradient is needed),
// but it records its mutation the way ATen's in-place ops do: an ADInplaceOrView kernel bumps the
// version counter (shared by every view of the storage), so a tensor that another op saved for
// backward and that we then overwrote makes backward raise "modified by an inplace operation".
#include <ATen/TensorOperators.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/softplus.h>
#include <ATen/ops/tanh.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/node.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "activations.h"
#include "op_handles.h"

namespace swishkernels {
namespace {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using torch::dynamo::autograd::CompiledNodeArgs;
using torch::dynamo::autograd::PackedArgs;
using torch::dynamo::autograd::SwapSavedVariables;

// f'(x) and f''(x) as ATen expressions (reference.py's *_double_backward, same formulas).
std::pair<at::Tensor, at::Tensor> derivatives(Activation act, const at::Tensor& x) {
  const at::Tensor s = at::sigmoid(x);
  if (act == Activation::Swish) {
    return {s * (1 + x * (1 - s)), s * (1 - s) * (2 + x * (1 - 2 * s))};
  }
  const at::Tensor t = at::tanh(at::softplus(x));
  const at::Tensor sech2 = 1 - t * t;
  return {t + x * s * sech2, sech2 * s * (2 + x * (1 - s) - 2 * x * s * t)};
}

void refuse_forward_ad(Activation act, const char* op, const at::Tensor& t) {
  TORCH_CHECK(!t._fw_grad(/*level=*/0).defined(), "swishkernels::", activation_name(act), op,
              ": forward-mode AD (torch.func.jvp/jacfwd/hessian, torch.autograd.forward_ad) through "
              "the raw op is not supported (its tangent would be dropped); use swishkernels.",
              activation_name(act), "(), its module or its Function, which have a jvp rule");
}

// Compiled autograd (torch._dynamo.compiled_autograd) calls a node through a "functional" form bound
// once by name: fn(grads, packed args) with the packed args listed in `schema`; it is put into the
// compiled backward graph as a call, which dynamo traces (our ops have fake kernels).
variable_list call_functional(const char* name, torch::autograd::functional_apply_t fn,
                              std::vector<at::TypePtr> schema, const variable_list& grads,
                              const PackedArgs& packed, const torch::autograd::edge_list& edges,
                              SwapSavedVariables& saved) {
  const auto& compiler = torch::dynamo::autograd::getPyCompilerInterface();
  static std::mutex bind_mutex;
  static std::set<std::string> bound;
  {
    std::lock_guard<std::mutex> lock(bind_mutex);
    if (bound.insert(name).second) {
      compiler->bind_function(saved.get_py_compiler(), name, std::move(fn), std::move(schema));
    }
  }
  const auto output_metadata = torch::dynamo::autograd::IValuePacker<
      std::vector<std::optional<torch::autograd::InputMetadata>>>::
      pack(torch::dynamo::autograd::get_input_metadata(edges));
  return compiler->call_function(saved.get_py_compiler(), "apply_functional", name, grads,
                                 packed.vec(), output_metadata);
}

// Gradient of X_forward: one saved tensor, x.
template <Activation act>
struct ForwardNode final : public Node {
  SavedVariable x_;

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);  // against release_variables (PyTorch's rule)
    variable_list grad_inputs(1);
    if (grads[0].defined() && task_should_compute_output(0)) {
      grad_inputs[0] = backward_op(act).call(grads[0], x_.unpack());
    }
    return grad_inputs;
  }
  std::string name() const override {
    return act == Activation::Swish ? "SwishBackward" : "MishBackward";
  }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x_.reset_data();
  }

  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& args) {
    PackedArgs packed(args);
    const bool needed = packed.unpack<bool>();
    const at::Tensor x = packed.unpack<at::Tensor>();
    variable_list grad_inputs(1);
    if (needed && grads[0].defined()) {
      grad_inputs[0] = backward_op(act).call(grads[0], x);
    }
    return grad_inputs;
  }
  void compiled_args(CompiledNodeArgs& args) const override {
    args.collect(x_, /*is_output=*/false);
  }
  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    saved.before(x_);
    PackedArgs packed;
    packed.pack(task_should_compute_output(0));
    packed.pack(x_.unpack());
    auto result = call_functional(
        act == Activation::Swish ? "swishkernels_SwishBackward" : "swishkernels_MishBackward",
        &functional, {c10::BoolType::get(), at::TensorType::get()}, grads, packed, next_edges(),
        saved);
    saved.after(x_);
    return result;
  }
};

// Gradient of X_backward(grad_output, x): d/d(grad_output) = f'(x); d/dx = grad_output * f''(x).
template <Activation act>
struct BackwardNode final : public Node {
  SavedVariable grad_output_;
  SavedVariable x_;

  static variable_list gradients(const at::Tensor& grad_grad_input, const at::Tensor& grad_output,
                                 const at::Tensor& x, bool needs_grad_output, bool needs_x) {
    variable_list grad_inputs(2);
    if (!grad_grad_input.defined()) {
      return grad_inputs;
    }
    const auto [first, second] = derivatives(act, x);
    if (needs_grad_output) {
      grad_inputs[0] = grad_grad_input * first;
    }
    if (needs_x) {
      grad_inputs[1] = grad_grad_input * grad_output * second;
    }
    return grad_inputs;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    return gradients(grads[0], grad_output_.unpack(), x_.unpack(), task_should_compute_output(0),
                     task_should_compute_output(1));
  }
  std::string name() const override {
    return act == Activation::Swish ? "SwishBackwardBackward" : "MishBackwardBackward";
  }
  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    grad_output_.reset_data();
    x_.reset_data();
  }

  static variable_list functional(const variable_list& grads, const std::vector<c10::IValue>& args) {
    PackedArgs packed(args);
    const bool needs_grad_output = packed.unpack<bool>();
    const bool needs_x = packed.unpack<bool>();
    const at::Tensor grad_output = packed.unpack<at::Tensor>();
    const at::Tensor x = packed.unpack<at::Tensor>();
    return gradients(grads[0], grad_output, x, needs_grad_output, needs_x);
  }
  void compiled_args(CompiledNodeArgs& args) const override {
    args.collect(grad_output_, /*is_output=*/false);
    args.collect(x_, /*is_output=*/false);
  }
  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    saved.before(grad_output_);
    saved.before(x_);
    PackedArgs packed;
    packed.pack(task_should_compute_output(0));
    packed.pack(task_should_compute_output(1));
    packed.pack(grad_output_.unpack());
    packed.pack(x_.unpack());
    auto result = call_functional(
        act == Activation::Swish ? "swishkernels_SwishBackwardBackward"
                                 : "swishkernels_MishBackwardBackward",
        &functional,
        {c10::BoolType::get(), c10::BoolType::get(), at::TensorType::get(), at::TensorType::get()},
        grads, packed, next_edges(), saved);
    saved.after(grad_output_);
    saved.after(x_);
    return result;
  }
};

// Attach the node as y's grad_fn, then tell torch.autograd.graph's node-creation hooks (as
// PyTorch's generated kernels do once a node is complete).
void attach(const at::Tensor& y, c10::intrusive_ptr<Node> grad_fn) {
  torch::autograd::set_history(y, grad_fn);
  torch::autograd::fire_node_creation_hooks(grad_fn);
}

template <Activation act>
at::Tensor forward_autograd(c10::DispatchKeySet ks, const at::Tensor& x) {
  refuse_forward_ad(act, "_forward", x);
  c10::intrusive_ptr<ForwardNode<act>> grad_fn;
  if (torch::autograd::compute_requires_grad(x)) {
    grad_fn = c10::make_intrusive<ForwardNode<act>>();
    grad_fn->set_next_edges(torch::autograd::collect_next_edges(x));
    grad_fn->x_ = SavedVariable(x, /*is_output=*/false);  // records x's version now
  }
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // run the device kernel, not this again
    y = forward_op(act).redispatch(ks & c10::after_autograd_keyset, x);
  }
  if (grad_fn) {
    attach(y, std::move(grad_fn));
  }
  return y;
}

template <Activation act>
at::Tensor backward_autograd(c10::DispatchKeySet ks, const at::Tensor& grad_output,
                             const at::Tensor& x) {
  refuse_forward_ad(act, "_backward", grad_output);
  refuse_forward_ad(act, "_backward", x);
  c10::intrusive_ptr<BackwardNode<act>> grad_fn;
  if (torch::autograd::compute_requires_grad(grad_output, x)) {
    grad_fn = c10::make_intrusive<BackwardNode<act>>();
    grad_fn->set_next_edges(torch::autograd::collect_next_edges(grad_output, x));
    grad_fn->grad_output_ = SavedVariable(grad_output, /*is_output=*/false);
    grad_fn->x_ = SavedVariable(x, /*is_output=*/false);
  }
  at::Tensor grad_input;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    grad_input = backward_op(act).redispatch(ks & c10::after_autograd_keyset, grad_output, x);
  }
  if (grad_fn) {
    attach(grad_input, std::move(grad_fn));
  }
  return grad_input;
}

template <Activation act>
void forward_inplace_and_bump_version(at::Tensor& x) {
  {
    at::AutoDispatchBelowADInplaceOrView below;  // run the device kernel
    forward_inplace_op(act).call(x);
  }
  torch::autograd::impl::bump_version(x);
}

}  // namespace

// Version counting happens at ADInplaceOrView, as for ATen's own in-place ops (not under
// inference_mode, where tensors carry no version counter).
TORCH_LIBRARY_IMPL(swishkernels, ADInplaceOrView, m) {
  m.impl("swish_forward_inplace", &forward_inplace_and_bump_version<Activation::Swish>);
  m.impl("mish_forward_inplace", &forward_inplace_and_bump_version<Activation::Mish>);
}

// The Autograd alias key covers every device's autograd key (AutogradCPU, AutogradCUDA, ...).
TORCH_LIBRARY_IMPL(swishkernels, Autograd, m) {
  m.impl("swish_forward", &forward_autograd<Activation::Swish>);
  m.impl("swish_backward", &backward_autograd<Activation::Swish>);
  m.impl("mish_forward", &forward_autograd<Activation::Mish>);
  m.impl("mish_backward", &backward_autograd<Activation::Mish>);
}

}  // namespace swishkernels
